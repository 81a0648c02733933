// N-API surface (see ../addon.d.ts). JS objects (and a step's packed arrays) are converted to
// plain C++ structs on the JS thread; the engine's work (weight loading, adapter loading, steps)
// runs on libuv's worker threads and settles a Promise, so JS never blocks on the engine.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

namespace {

using namespace sb;

[[noreturn]] void typeError(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

Napi::Value field(const Napi::Object& o, const char* key) { return o.Get(key); }

double getNumber(const Napi::Object& o, const char* key, const std::string& at) {
  Napi::Value v = field(o, key);
  if (!v.IsNumber()) typeError(o.Env(), at + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int getInt(const Napi::Object& o, const char* key, const std::string& at) {
  double d = getNumber(o, key, at);
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < -2147483648.0 || d > 2147483647.0)
    typeError(o.Env(), at + key + " must be an integer");
  return static_cast<int>(d);
}

bool getBool(const Napi::Object& o, const char* key, const std::string& at) {
  Napi::Value v = field(o, key);
  if (!v.IsBoolean()) typeError(o.Env(), at + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string getString(const Napi::Object& o, const char* key, const std::string& at) {
  Napi::Value v = field(o, key);
  if (!v.IsString()) typeError(o.Env(), at + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object getObject(const Napi::Object& o, const char* key, const std::string& at) {
  Napi::Value v = field(o, key);
  if (!v.IsObject()) typeError(o.Env(), at + key + " must be an object");
  return v.As<Napi::Object>();
}

template <typename T, napi_typedarray_type Kind>
std::vector<T> getTyped(const Napi::Object& o, const char* key, const std::string& at, const char* kindName) {
  Napi::Value v = field(o, key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Kind)
    typeError(o.Env(), at + key + " must be a " + kindName);
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(arr.Data(), arr.Data() + arr.ElementLength());
}

DType parseDType(Napi::Env env, const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  typeError(env, "unsupported dtype " + s);
}

// A packed quantized weight (addon.d.ts NativePackedWeight), its sizes checked against the ref's shape.
std::shared_ptr<const PackedWeight> parsePacked(const Napi::Object& o, const std::vector<int64_t>& shape, const std::string& at) {
  auto w = std::make_shared<PackedWeight>();
  Napi::Env env = o.Env();
  const std::string layout = getString(o, "layout", at), codebook = getString(o, "codebook", at);
  if (layout != "q4" && layout != "q8") typeError(env, at + "layout must be q4 or q8");
  w->layout = layout == "q4" ? PackedLayout::Q4 : PackedLayout::Q8;
  if (codebook == "lut") w->codebook = PackedCodebook::Lut;
  else if (codebook == "u8") w->codebook = PackedCodebook::U8;
  else if (codebook == "s8") w->codebook = PackedCodebook::S8;
  else if (codebook == "e4m3") w->codebook = PackedCodebook::E4M3;
  else typeError(env, at + "codebook must be lut, u8, s8 or e4m3");
  if ((w->layout == PackedLayout::Q4) != (w->codebook == PackedCodebook::Lut)) typeError(env, at + "q4 goes with codebook lut, q8 with u8, s8 or e4m3");
  w->out = getInt(o, "outFeatures", at);
  w->in = getInt(o, "inFeatures", at);
  w->groupSize = getInt(o, "groupSize", at);
  if (shape != std::vector<int64_t>{w->out, w->in}) typeError(env, at + "outFeatures and inFeatures must be the tensor's shape");
  if (w->out <= 0 || w->in <= 0 || w->groupSize <= 0 || (w->layout == PackedLayout::Q4 && w->in % 2 != 0))
    typeError(env, at + "sizes must be positive (and in_features even for q4)");
  w->codes = getTyped<uint8_t, napi_uint8_array>(o, "codes", at, "Uint8Array");
  w->scales = getTyped<float, napi_float32_array>(o, "scales", at, "Float32Array");
  auto optional = [&](const char* key) { Napi::Value v = field(o, key); return !v.IsUndefined() && !v.IsNull(); };
  if (optional("lut")) w->lut = getTyped<float, napi_float32_array>(o, "lut", at, "Float32Array");
  if (optional("zeros")) w->zeros = getTyped<float, napi_float32_array>(o, "zeros", at, "Float32Array");
  if (optional("perm")) w->perm = getTyped<int32_t, napi_int32_array>(o, "perm", at, "Int32Array");
  const size_t n = size_t(w->out) * size_t(w->groups());
  const size_t codeBytes = w->layout == PackedLayout::Q4 ? size_t(w->out) * size_t(w->in) / 2 : size_t(w->out) * size_t(w->in);
  if (w->codes.size() != codeBytes || w->scales.size() != n || (!w->zeros.empty() && w->zeros.size() != n) ||
      (w->layout == PackedLayout::Q4 ? w->lut.size() != 16 : !w->lut.empty()))
    typeError(env, at + "codes, scales, zeros or lut do not fit the sizes");
  if (!w->perm.empty()) {
    if (int64_t(w->perm.size()) != w->in) typeError(env, at + "perm must have in_features entries");
    std::vector<bool> seen(size_t(w->in), false);
    for (int32_t i : w->perm) {
      if (i < 0 || i >= w->in || seen[size_t(i)]) typeError(env, at + "perm must be a permutation");
      seen[size_t(i)] = true;
    }
  }
  return w;
}

TensorRef parseTensor(const Napi::Object& o, const std::string& at) {
  TensorRef t;
  t.name = getString(o, "name", at);
  t.dtype = parseDType(o.Env(), getString(o, "dtype", at));
  Napi::Value shape = field(o, "shape");
  if (!shape.IsArray()) typeError(o.Env(), at + "shape must be an array");
  auto arr = shape.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value d = arr.Get(i);
    if (!d.IsNumber() || d.As<Napi::Number>().Int64Value() < 0) typeError(o.Env(), at + "shape must hold sizes");
    t.shape.push_back(d.As<Napi::Number>().Int64Value());
  }
  Napi::Value data = field(o, "data");
  Napi::Value random = field(o, "random");
  Napi::Value packed = field(o, "packed");
  if (packed.IsObject()) {
    t.packed = parsePacked(packed.As<Napi::Object>(), t.shape, at + "packed.");
  } else if (random.IsObject()) {
    Napi::Object r = random.As<Napi::Object>();
    t.random = true;
    t.randomSeed = static_cast<uint64_t>(getNumber(r, "seed", at + "random."));
    t.randomStd = static_cast<float>(getNumber(r, "std", at + "random."));
  } else if (!data.IsUndefined() && !data.IsNull()) {
    t.inlineData = getTyped<float, napi_float32_array>(o, "data", at, "Float32Array");
    t.hasInline = true;
  } else {
    t.file = getString(o, "file", at);
    t.offset = static_cast<int64_t>(getNumber(o, "offset", at));
    t.nbytes = static_cast<int64_t>(getNumber(o, "nbytes", at));
  }
  return t;
}

ModelConfig parseConfig(const Napi::Object& o) {
  const std::string at = "spec.";
  ModelConfig c;
  c.arch = getString(o, "arch", at);
  c.hidden = getInt(o, "hiddenSize", at);
  c.intermediate = getInt(o, "intermediateSize", at);
  c.layers = getInt(o, "numLayers", at);
  c.heads = getInt(o, "numHeads", at);
  c.kvHeads = getInt(o, "numKvHeads", at);
  c.headDim = getInt(o, "headDim", at);
  c.vocab = getInt(o, "vocabSize", at);
  c.rmsNormEps = static_cast<float>(getNumber(o, "rmsNormEps", at));
  c.ropeTheta = getNumber(o, "ropeTheta", at);
  const std::string rt = getString(o, "ropeType", at);
  if (rt == "default") c.ropeType = RopeType::Default;
  else if (rt == "linear") c.ropeType = RopeType::Linear;
  else if (rt == "llama3") c.ropeType = RopeType::Llama3;
  else if (rt == "yarn") c.ropeType = RopeType::Yarn;
  else if (rt == "dynamic") c.ropeType = RopeType::Dynamic;
  else if (rt == "longrope") c.ropeType = RopeType::LongRope;
  else typeError(o.Env(), "unsupported rope type " + rt);
  c.ropeFactor = getNumber(o, "ropeFactor", at);
  c.ropeLowFreqFactor = getNumber(o, "ropeLowFreqFactor", at);
  c.ropeHighFreqFactor = getNumber(o, "ropeHighFreqFactor", at);
  c.ropeOriginalMaxPositions = getInt(o, "ropeOriginalMaxPositions", at);
  Napi::Value sw = field(o, "slidingWindow");
  if (!sw.IsArray()) typeError(o.Env(), "spec.slidingWindow must be an array");
  auto swa = sw.As<Napi::Array>();
  for (uint32_t i = 0; i < swa.Length(); i++) c.slidingWindow.push_back(swa.Get(i).As<Napi::Number>().Int32Value());
  c.attentionBias = getBool(o, "attentionBias", at);
  c.tieWordEmbeddings = getBool(o, "tieWordEmbeddings", at);
  // Family features (model-config.ts): optional, absent = the Llama behaviour.
  auto has = [&](const char* k) { return !field(o, k).IsUndefined(); };
  if (has("qkNorm")) c.qkNorm = getBool(o, "qkNorm", at);
  if (has("gemmaNorm")) c.gemmaNorm = getBool(o, "gemmaNorm", at);
  if (has("sandwichNorm")) c.sandwichNorm = getBool(o, "sandwichNorm", at);
  if (has("embedScale")) c.embedScale = static_cast<float>(getNumber(o, "embedScale", at));
  if (has("hiddenAct")) {
    const std::string act = getString(o, "hiddenAct", at);
    if (act != "silu" && act != "gelu_tanh") typeError(o.Env(), "unsupported hiddenAct " + act);
    c.geluTanh = act == "gelu_tanh";
  }
  if (has("attnScale")) c.attnScale = static_cast<float>(getNumber(o, "attnScale", at));
  if (has("attnSoftcap")) c.attnSoftcap = static_cast<float>(getNumber(o, "attnSoftcap", at));
  if (has("finalSoftcap")) c.finalSoftcap = static_cast<float>(getNumber(o, "finalSoftcap", at));
  if (has("ropeLocalTheta")) c.ropeLocalTheta = getNumber(o, "ropeLocalTheta", at);
  if (has("ropeAttentionFactor")) c.ropeAttentionFactor = getNumber(o, "ropeAttentionFactor", at);
  if (has("ropeBetaFast")) c.ropeBetaFast = getNumber(o, "ropeBetaFast", at);
  if (has("ropeBetaSlow")) c.ropeBetaSlow = getNumber(o, "ropeBetaSlow", at);
  if (has("ropeTruncate")) c.ropeTruncate = getBool(o, "ropeTruncate", at);
  auto floats = [&](const char* k, std::vector<float>& out) {
    if (!has(k)) return;
    Napi::Value v = field(o, k);
    if (!v.IsArray()) typeError(o.Env(), at + k + " must be an array of numbers");
    auto a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value e = a.Get(i);
      if (!e.IsNumber()) typeError(o.Env(), at + k + " must be an array of numbers");
      out.push_back(e.As<Napi::Number>().FloatValue());
    }
  };
  floats("ropeShortFactor", c.ropeShortFactor);
  floats("ropeLongFactor", c.ropeLongFactor);
  if (has("numExperts")) c.numExperts = getInt(o, "numExperts", at);
  if (has("expertsPerToken")) c.expertsPerToken = getInt(o, "expertsPerToken", at);
  if (has("moeIntermediateSize")) c.moeIntermediate = getInt(o, "moeIntermediateSize", at);
  if (has("normTopkProb")) c.normTopkProb = getBool(o, "normTopkProb", at);
  if (has("sharedExpertIntermediateSize")) c.sharedExpertIntermediate = getInt(o, "sharedExpertIntermediateSize", at);
  if (has("moeLayers")) {
    Napi::Value v = field(o, "moeLayers");
    if (!v.IsArray()) typeError(o.Env(), at + "moeLayers must be an array of booleans");
    auto a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) c.moeLayer.push_back(a.Get(i).ToBoolean().Value() ? 1 : 0);
    if (static_cast<int>(c.moeLayer.size()) != c.layers) typeError(o.Env(), at + "moeLayers must have one entry per layer");
  }
  if (c.hidden <= 0 || c.intermediate <= 0 || c.layers <= 0 || c.heads <= 0 || c.kvHeads <= 0 ||
      c.headDim <= 0 || c.vocab <= 0)
    typeError(o.Env(), "model dimensions must be positive");
  if (static_cast<int>(c.slidingWindow.size()) != c.layers)
    typeError(o.Env(), "spec.slidingWindow must have one entry per layer");
  return c;
}

// Options both addons take (each engine uses its own; see NativeEngineOptions). Optional fields
// keep EngineOptions' defaults when absent; a present field of the wrong type is a TypeError.
EngineOptions parseOptions(const Napi::Object& opts) {
  const std::string at = "options.";
  auto given = [&](const char* key) { return !field(opts, key).IsUndefined(); };
  EngineOptions o;
  o.numBlocks = getInt(opts, "numBlocks", at);
  o.blockSize = getInt(opts, "blockSize", at);
  o.maxAdapters = getInt(opts, "maxAdapters", at);
  if (given("threads")) o.threads = getInt(opts, "threads", at);
  if (given("dtype")) {
    o.dtype = getString(opts, "dtype", at);
    if (o.dtype != "float32" && o.dtype != "float16" && o.dtype != "bfloat16")
      typeError(opts.Env(), "options.dtype must be float32, float16 or bfloat16, got " + o.dtype);
  }
  if (given("cudaGraphs")) o.cudaGraphs = getBool(opts, "cudaGraphs", at);
  if (given("prefillAttention")) o.prefillAttention = getBool(opts, "prefillAttention", at);
  if (given("quantGemvRows")) {
    o.quantGemvRows = getInt(opts, "quantGemvRows", at);
    if (o.quantGemvRows < 0 || o.quantGemvRows > 256) typeError(opts.Env(), "options.quantGemvRows must be 0..256, got " + std::to_string(o.quantGemvRows));
  }
  return o;
}

// A step's batch arrives packed (see engine.ts): per sequence kSeqFields doubles in `seqs`, its
// tokens, block table and penalty tokens back to back in `ints`, its mask words in `masks`. A
// few typed arrays cross N-API in a handful of calls, where an object per sequence cost ~17
// property reads each, on the JS thread, while the GPU waited. Numbers travel as doubles so a
// caller's 1.5 or NaN is still visible here and rejected, not rounded into an int32 slot.
enum SeqField {
  kPosition, kAdapterSlot, kPromptLogprobs, kNextToken, kSample, kTopLogprobs,
  kTemperature, kTopK, kTopP, kTypicalP, kRepetitionPenalty, kSeed,
  kNumTokens, kNumBlocks, kNumPenaltyTokens, kNumBias, kNumMaskWords, kSeqFields
};
const char* const kSeqFieldNames[kSeqFields] = {
    "position", "adapterSlot", "promptLogprobs", "nextToken", "sample", "topLogprobs",
    "sampling.temperature", "sampling.topK", "sampling.topP", "sampling.typicalP",
    "sampling.repetitionPenalty", "sampling.seed",
    "tokens", "blockTable", "penaltyTokens", "bias", "mask"};

// Messages are only built on failure: a decode step must not pay for strings it never shows.
[[noreturn]] void seqError(Napi::Env env, size_t i, SeqField k, const std::string& what) {
  typeError(env, "batch[" + std::to_string(i) + "]." + kSeqFieldNames[k] + " " + what);
}

int intField(Napi::Env env, const double* f, size_t i, SeqField k) {
  const double d = f[k];
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != std::trunc(d)) seqError(env, i, k, "must be an integer");
  return static_cast<int>(d);
}

bool boolField(Napi::Env env, const double* f, size_t i, SeqField k) {
  if (f[k] != 0 && f[k] != 1) seqError(env, i, k, "must be a boolean (0 or 1)");
  return f[k] == 1;
}

// The next `count` values of a pool (count from field k), checked against what the pool holds.
template <typename T>
std::vector<T> takeFromPool(Napi::Env env, const double* f, size_t i, SeqField k, const Napi::TypedArrayOf<T>& pool,
                            const char* poolName, size_t& used) {
  const double d = f[k];
  if (!(d >= 0 && d <= 2147483647.0) || d != std::trunc(d))
    seqError(env, i, k, "length must be a non-negative integer");
  const size_t count = static_cast<size_t>(d);
  if (count > pool.ElementLength() - used)
    seqError(env, i, k,
             "needs " + std::to_string(count) + " values from " + poolName + "[" + std::to_string(used) + "], past its end (" +
                 std::to_string(pool.ElementLength()) + " values)");
  const T* from = pool.Data() + used;
  used += count;
  return std::vector<T>(from, from + count);
}

template <typename T, napi_typedarray_type Kind>
Napi::TypedArrayOf<T> typedArg(const Napi::CallbackInfo& info, size_t index, const char* name, const char* kindName) {
  Napi::Value v = info[index];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Kind)
    typeError(info.Env(), std::string("step(seqs, ints, masks): ") + name + " must be " + kindName);
  return v.As<Napi::TypedArrayOf<T>>();
}

// Copies everything out of the JS arrays before returning, so the caller may reuse or change
// them as soon as step() returns its Promise.
std::vector<SeqInput> parseBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto seqs = typedArg<double, napi_float64_array>(info, 0, "seqs", "a Float64Array");
  auto ints = typedArg<int32_t, napi_int32_array>(info, 1, "ints", "an Int32Array");
  auto masks = typedArg<uint32_t, napi_uint32_array>(info, 2, "masks", "a Uint32Array");
  if (seqs.ElementLength() % kSeqFields != 0)
    typeError(env, "step: seqs must hold " + std::to_string(kSeqFields) + " numbers per sequence, got " +
                       std::to_string(seqs.ElementLength()));
  const size_t n = seqs.ElementLength() / kSeqFields;
  std::vector<SeqInput> batch(n);
  size_t intsUsed = 0, wordsUsed = 0;
  for (size_t i = 0; i < n; i++) {
    const double* f = seqs.Data() + i * kSeqFields;
    SeqInput& s = batch[i];
    s.position = intField(env, f, i, kPosition);
    s.adapterSlot = intField(env, f, i, kAdapterSlot);
    s.promptLogprobs = boolField(env, f, i, kPromptLogprobs);
    s.nextToken = intField(env, f, i, kNextToken);
    s.sample = boolField(env, f, i, kSample);
    s.topLogprobs = intField(env, f, i, kTopLogprobs);
    // Ranges of the floats (and NaN) are validateBatch's business, as for every engine.
    s.sampling.temperature = static_cast<float>(f[kTemperature]);
    s.sampling.topK = intField(env, f, i, kTopK);
    s.sampling.topP = static_cast<float>(f[kTopP]);
    s.sampling.typicalP = static_cast<float>(f[kTypicalP]);
    s.sampling.repetitionPenalty = static_cast<float>(f[kRepetitionPenalty]);
    const double seed = f[kSeed];
    if (!(seed >= 0 && seed <= 9007199254740991.0) || seed != std::trunc(seed))
      seqError(env, i, kSeed, "must be a non-negative safe integer");
    s.sampling.seed = static_cast<uint64_t>(seed);
    s.tokens = takeFromPool(env, f, i, kNumTokens, ints, "ints", intsUsed);
    s.blockTable = takeFromPool(env, f, i, kNumBlocks, ints, "ints", intsUsed);
    s.penaltyTokens = takeFromPool(env, f, i, kNumPenaltyTokens, ints, "ints", intsUsed);
    // bias: its length n counts entries; `ints` holds n token ids, then their n float32 biases
    // as bit patterns (the one float list of a step: no pool of its own for it).
    std::vector<int32_t> bias = takeFromPool(env, f, i, kNumBias, ints, "ints", intsUsed);
    const size_t nb = bias.size();
    if (nb > ints.ElementLength() - intsUsed) seqError(env, i, kNumBias, "values run past the end of ints");
    s.biasTokens = std::move(bias);
    s.biasValues.resize(nb);
    if (nb) std::memcpy(s.biasValues.data(), ints.Data() + intsUsed, nb * 4);
    intsUsed += nb;
    s.mask = takeFromPool(env, f, i, kNumMaskWords, masks, "masks", wordsUsed);
  }
  // A pool longer than its sequences' lengths means the lengths are wrong, not spare room.
  if (intsUsed != ints.ElementLength())
    typeError(env, "step: ints holds " + std::to_string(ints.ElementLength()) + " values, the sequences use " +
                       std::to_string(intsUsed));
  if (wordsUsed != masks.ElementLength())
    typeError(env, "step: masks holds " + std::to_string(masks.ElementLength()) + " words, the sequences use " +
                       std::to_string(wordsUsed));
  return batch;
}

// Results go back packed for the same reason (engine.ts unpacks them into NativeSeqOutput):
// kOutFields ints per sequence in `seqs` [token, alternatives at the sampled position (-1: none),
// prompt logprobs (-1: none), prompt positions with alternatives], then the length of each of
// those prompt alternative groups; `logprobs`: each sequence's sampled logprob, then all prompt
// logprobs; `altIds`/`altLogprobs`: every alternative, per sequence the sampled position's first.
enum OutField { kOutToken, kOutTop, kOutPrompt, kOutPromptTop, kOutFields };
const char* const kOutFieldNames[kOutFields] = {"token", "top", "prompt", "promptTop"};

// The two enums above are the packed layout's one definition: exported as `stepLayout` (field
// names in slot order), from which engine.ts takes every index when it loads this addon, and
// refuses an addon whose names are not the ones it packs (a stale build).
Napi::Object stepLayout(Napi::Env env) {
  auto names = [&](const char* const* list, size_t n) {
    Napi::Array a = Napi::Array::New(env, n);
    for (size_t i = 0; i < n; i++) a.Set(static_cast<uint32_t>(i), list[i]);
    return a;
  };
  Napi::Object o = Napi::Object::New(env);
  o.Set("seq", names(kSeqFieldNames, kSeqFields));
  o.Set("out", names(kOutFieldNames, kOutFields));
  return o;
}

// ids and logprobs are parallel; the min keeps an engine bug from reading past either.
size_t altCount(const TopLogprobs& t) { return std::min(t.ids.size(), t.logprobs.size()); }

Napi::Value packOutputs(Napi::Env env, const std::vector<SeqOutput>& outs) {
  size_t groups = 0, prompt = 0, alts = 0;
  for (const SeqOutput& o : outs) {
    if (o.hasTop) alts += altCount(o.top);
    if (!o.hasPromptLogprobs) continue;
    prompt += o.promptLogprobs.size();
    groups += o.promptTop.size();
    for (const TopLogprobs& t : o.promptTop) alts += altCount(t);
  }
  auto seqs = Napi::Int32Array::New(env, outs.size() * kOutFields + groups);
  auto logprobs = Napi::Float32Array::New(env, outs.size() + prompt);
  auto altIds = Napi::Int32Array::New(env, alts);
  auto altLogprobs = Napi::Float32Array::New(env, alts);
  int32_t* groupLen = seqs.Data() + outs.size() * kOutFields;
  float* promptLp = logprobs.Data() + outs.size();
  int32_t* ids = altIds.Data();
  float* altLp = altLogprobs.Data();
  auto putAlts = [&](const TopLogprobs& t) {
    const size_t k = altCount(t);
    ids = std::copy_n(t.ids.begin(), k, ids);
    altLp = std::copy_n(t.logprobs.begin(), k, altLp);
    return static_cast<int32_t>(k);
  };
  for (size_t i = 0; i < outs.size(); i++) {
    const SeqOutput& o = outs[i];
    int32_t* h = seqs.Data() + i * kOutFields;
    h[kOutToken] = o.token;
    logprobs.Data()[i] = o.logprob;
    h[kOutTop] = o.hasTop ? putAlts(o.top) : -1;
    h[kOutPrompt] = o.hasPromptLogprobs ? static_cast<int32_t>(o.promptLogprobs.size()) : -1;
    h[kOutPromptTop] = o.hasPromptLogprobs ? static_cast<int32_t>(o.promptTop.size()) : 0;
    if (!o.hasPromptLogprobs) continue;
    promptLp = std::copy(o.promptLogprobs.begin(), o.promptLogprobs.end(), promptLp);
    for (const TopLogprobs& t : o.promptTop) *groupLen++ = putAlts(t);
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("seqs", seqs);
  res.Set("logprobs", logprobs);
  res.Set("altIds", altIds);
  res.Set("altLogprobs", altLogprobs);
  return res;
}

// Runs fn() on a worker thread and settles a Promise with convert(result) or the error.
template <typename R>
class Task : public Napi::AsyncWorker {
 public:
  using Fn = std::function<R()>;
  using Convert = std::function<Napi::Value(Napi::Env, R&)>;
  Task(Napi::Env env, Fn fn, Convert convert)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fn_(std::move(fn)),
        convert_(std::move(convert)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      result_ = fn_();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown engine error");
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    deferred_.Resolve(convert_(Env(), result_));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Fn fn_;
  Convert convert_;
  R result_{};
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {InstanceMethod("load", &EngineWrap::Load), InstanceMethod("info", &EngineWrap::Info),
                        InstanceMethod("loadAdapter", &EngineWrap::LoadAdapter),
                        InstanceMethod("unloadAdapter", &EngineWrap::UnloadAdapter),
                        InstanceMethod("step", &EngineWrap::Step), InstanceMethod("close", &EngineWrap::Close)});
  }

  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsObject())
      typeError(env, "new NativeEngine(spec, options)");
    Napi::Object spec = info[0].As<Napi::Object>();
    ModelConfig config = parseConfig(spec);
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsArray()) typeError(env, "spec.tensors must be an array");
    auto ta = tv.As<Napi::Array>();
    std::vector<TensorRef> tensors;
    for (uint32_t i = 0; i < ta.Length(); i++)
      tensors.push_back(parseTensor(ta.Get(i).As<Napi::Object>(), "spec.tensors[" + std::to_string(i) + "]."));
    EngineOptions o = parseOptions(info[1].As<Napi::Object>());
    try {
#ifdef SB_CUDA_ADDON
      engine_ = std::shared_ptr<Engine>(makeCudaEngine(std::move(config), std::move(tensors), o));
#else
      engine_ = std::shared_ptr<Engine>(makeCpuEngine(std::move(config), std::move(tensors), o));
#endif
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

 private:
  std::shared_ptr<Engine> live(Napi::Env env) {
    if (!engine_) throw Napi::Error::New(env, "engine is closed");
    return engine_;
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    auto e = live(info.Env());
    auto* t = new Task<bool>(info.Env(), [e] { e->load(); return true; },
                             [](Napi::Env env, bool&) { return env.Undefined(); });
    auto p = t->Promise();
    t->Queue();
    return p;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    EngineInfo i = live(info.Env())->info();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("device", i.device);
    o.Set("deviceName", i.deviceName);
    o.Set("numBlocks", i.numBlocks);
    o.Set("blockSize", i.blockSize);
    o.Set("maxAdapters", i.maxAdapters);
    o.Set("weightBytes", static_cast<double>(i.weightBytes));
    o.Set("graphSteps", static_cast<double>(i.graphSteps));
    o.Set("lastStepDeviceMs", i.lastStepDeviceMs);
    return o;
  }

  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto e = live(env);
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsObject()) typeError(env, "loadAdapter(slot, spec)");
    const int slot = info[0].As<Napi::Number>().Int32Value();
    Napi::Value mv = info[1].As<Napi::Object>().Get("modules");
    if (!mv.IsArray()) typeError(env, "spec.modules must be an array");
    auto ma = mv.As<Napi::Array>();
    std::vector<LoraModuleSpec> modules;
    for (uint32_t i = 0; i < ma.Length(); i++) {
      const std::string at = "modules[" + std::to_string(i) + "].";
      Napi::Value mvi = ma.Get(i);
      if (!mvi.IsObject()) typeError(env, at + " must be an object");
      Napi::Object m = mvi.As<Napi::Object>();
      LoraModuleSpec s;
      s.layer = getInt(m, "layer", at);
      s.proj = projFromName(getString(m, "module", at));
      if (s.proj < 0) typeError(env, at + "module is not one of q/k/v/o/gate/up/down_proj, embed_tokens, lm_head, experts.gate_up_proj, experts.down_proj");
      s.rank = getInt(m, "rank", at);
      s.scale = static_cast<float>(getNumber(m, "scale", at));
      s.a = parseTensor(getObject(m, "a", at), at + "a.");
      s.b = parseTensor(getObject(m, "b", at), at + "b.");
      modules.push_back(std::move(s));
    }
    auto* t = new Task<bool>(env, [e, slot, modules = std::move(modules)] { e->loadAdapter(slot, modules); return true; },
                             [](Napi::Env env, bool&) { return env.Undefined(); });
    auto p = t->Promise();
    t->Queue();
    return p;
  }

  Napi::Value UnloadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) typeError(env, "unloadAdapter(slot)");
    try {
      live(env)->unloadAdapter(info[0].As<Napi::Number>().Int32Value());
    } catch (const EngineError& err) {
      throw Napi::Error::New(env, err.what());
    }
    return env.Undefined();
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    auto e = live(info.Env());
    std::vector<SeqInput> batch = parseBatch(info);
    auto* t = new Task<std::vector<SeqOutput>>(
        info.Env(), [e, batch = std::move(batch)] { return e->step(batch); },
        [](Napi::Env env, std::vector<SeqOutput>& outs) { return packOutputs(env, outs); });
    auto p = t->Promise();
    t->Queue();
    return p;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    // Work already queued keeps its own reference and finishes; the memory goes with the last one.
    engine_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Engine> engine_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeEngine", EngineWrap::Init(env));
  exports.Set("stepLayout", stepLayout(env));
  // Why the CUDA engine would refuse this model spec (null when it would serve it), in both addons.
  exports.Set("cudaUnsupported", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) typeError(info.Env(), "cudaUnsupported(spec)");
    const std::string why = cudaUnsupported(parseConfig(info[0].As<Napi::Object>()));
    return why.empty() ? info.Env().Null() : Napi::String::New(info.Env(), why);
  }));
#ifdef SB_CUDA_ADDON
  exports.Set("cudaAvailable", Napi::Boolean::New(env, true));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), cudaDevices());
              }));
  // {free, total} bytes of the current device, or null: the server sizes the KV cache from it.
  exports.Set("cudaMemory", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                size_t freeBytes = 0, totalBytes = 0;
                if (!cudaMemory(freeBytes, totalBytes)) return info.Env().Null();
                Napi::Object o = Napi::Object::New(info.Env());
                o.Set("free", Napi::Number::New(info.Env(), double(freeBytes)));
                o.Set("total", Napi::Number::New(info.Env(), double(totalBytes)));
                return o;
              }));
#else
  exports.Set("cudaAvailable", Napi::Boolean::New(env, false));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), 0);
              }));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(switchboard_native, Init)
