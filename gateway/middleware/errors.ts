// The app's one error mapping: whatever a middleware or route throws becomes an answer in the
// shape of the API the path belongs to (errors.ts: GatewayError, ShapedError, the store being
// down); anything else is logged with its stack and answered as a 500 that reveals nothing.
import type { ErrorHandler, NotFoundHandler } from 'hono';
import { apiKindOf, errorResponseFor, GatewayError, ShapedError } from '../errors.ts';

export function onError(log: (msg: string) => void): ErrorHandler {
  return (err, c) => {
    if (!(err instanceof GatewayError) && !(err instanceof ShapedError)) log(`error on ${c.req.method} ${c.req.path}: ${(err as Error)?.stack ?? err}`);
    return errorResponseFor(apiKindOf(c.req.path), err);
  };
}

export const notFound: NotFoundHandler = (c) => new GatewayError(404, `no route ${c.req.method} ${c.req.path}`, { loraxType: 'not_found' }).response(apiKindOf(c.req.path));
