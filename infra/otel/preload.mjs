// OpenTelemetry SDK for the backend (and gateway) processes: `node --import /opt/otel/preload.mjs`.
// The server code only calls @opentelemetry/api, which is a no-op until an SDK is registered;
// this file registers one when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set:
// a NodeTracerProvider with the W3C traceparent propagator, a batch processor and the OTLP/HTTP
// exporter. Standard variables apply: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SDK_DISABLED.
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

const env = process.env;
const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
if (endpoint && env.OTEL_SDK_DISABLED !== 'true') {
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || 'switchboard-backend' }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register();
  const flush = () => provider.forceFlush().catch(() => {});
  // The server exits on SIGTERM right after closing; give queued spans a moment to leave.
  process.once('SIGTERM', flush);
  process.once('SIGINT', flush);
  process.stderr.write(`[otel] exporting traces to ${endpoint}\n`);
}
