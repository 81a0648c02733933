// The CUDA engine: the same step as the CPU engine (cpu-engine.cc), on the GPU. Weights and
// activations in the model's 16-bit type (or fp32 on request, for exactness tests), base GEMMs
// through cuBLAS, the rest through the kernels in ../../kernels (launch.h). Adapter weights are
// uploaded on their own stream, so a load never stalls running steps. Decode steps replay CUDA
// graphs (one launch instead of hundreds). Tokens, sampling with masks and penalties, prompt
// logprobs and alternatives are computed on the device; only typical-p sampling and more than
// kMaxDeviceTopN alternatives fall back to the host finish the CPU engine uses (finish.h).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <tuple>
#include <mutex>

#include "../../kernels/launch.h"
#include "engine.h"
#include "finish.h"
#include "rope.h"
#include "tensor-io.h"

namespace sb {
namespace {

using kern::Elem;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw EngineError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}
void checkK(int e, const char* what) { check(static_cast<cudaError_t>(e), what); }
void checkB(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) throw EngineError(std::string("cuBLAS error in ") + what + ": " + std::to_string(static_cast<int>(e)));
}

size_t elemSize(Elem t) { return t == Elem::F32 ? 4 : 2; }
cudaDataType cudaType(Elem t) { return t == Elem::F32 ? CUDA_R_32F : t == Elem::F16 ? CUDA_R_16F : CUDA_R_16BF; }

// A device allocation that frees itself.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; o.bytes = 0; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  // Returns true when the buffer moved (captured CUDA graphs hold its old address).
  bool reserve(size_t n, const char* what) {
    if (n <= bytes) return false;
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
    check(cudaMalloc(&p, n), what);
    bytes = n;
    return true;
  }
  template <typename T> T* as() const { return static_cast<T*>(p); }
};

struct PinnedBuf {
  void* p = nullptr;
  size_t bytes = 0;
  ~PinnedBuf() {
    if (p) cudaFreeHost(p);
  }
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (p) cudaFreeHost(p);
    p = nullptr;
    check(cudaMallocHost(&p, n), "cudaMallocHost");
    bytes = n;
  }
};

struct Layer {
  DevBuf inNorm, postNorm, wqkv, bqkv, wo, wgu, wd;
};

// What the families of issue 18 add to a layer (loadFamilyLayer, forward, moeMlp): per-head q/k norms,
// Gemma's pre/post feed-forward norms, and a mixture-of-experts MLP (router [E, H], per expert
// gate|up [2 M, H] and down [H, M]) in place of the dense one.
struct FamilyLayer {
  DevBuf qNorm, kNorm, preFfNorm, postFfNorm, router;
  std::vector<DevBuf> expGU, expD;
  DevBuf guPtrs, dPtrs;  // device arrays of the experts' addresses (kern::moeGemv)
  DevBuf sharedGU, sharedD, sharedGate;  // Qwen2-MoE's shared expert: gate|up [2 S, H], down [H, S], gate [1, H]
  bool moe = false;
};

// Per-step buffers of the mixture-of-experts MLP (sized for the step's rows * experts per token).
struct MoeBufs {
  DevBuf logits, ints, weights, xg, gu, act, y;
  PinnedBuf hostOffsets;
};

struct AdapterBufs {
  std::vector<DevBuf> bufs;
  int maxRank = 0;      // of the decoder projections
  bool embed = false;   // has LoRA on embed_tokens
  int headRank = 0;     // of its lm_head LoRA (0: none)
  int expertRank = 0;   // of its LoRA on MoE expert weights (0: none)
};

// A quantized projection kept packed on the device (kernels/quant_gemm.cuh computes with it): one part
// when its pieces (q, k, v or gate, up) share a layout, else one per piece, each writing its own columns.
struct QuantPart {
  DevBuf codes, scales, zeros, lut, perm;
  kern::QuantWeight w{};
  int col = 0;  // first output column of this part in the projection's output
};
struct QuantLinear {
  std::vector<QuantPart> parts;
  int out = 0, in = 0;
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(ModelConfig c, std::vector<TensorRef> tensors, EngineOptions o, Elem elem)
      : c_(std::move(c)), refs_(std::move(tensors)), o_(o), t_(elem) {
    // Refused here, when the model loads, rather than by every step's kernels.
    const std::string unsupported = cudaUnsupported(c_);
    if (!unsupported.empty()) throw EngineError(unsupported);
    if (o_.numBlocks <= 0 || o_.blockSize <= 0) throw EngineError("numBlocks and blockSize must be > 0");
    if (c_.heads % c_.kvHeads != 0) throw EngineError("num_attention_heads must be a multiple of num_key_value_heads");
    if (static_cast<int>(c_.slidingWindow.size()) != c_.layers) c_.slidingWindow.assign(c_.layers, 0);
    checkFamilyConfig();
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (count == 0) throw EngineError("no CUDA device");
    check(cudaSetDevice(0), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    deviceName_ = prop.name;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaStreamCreateWithFlags(&copyStream_, cudaStreamNonBlocking), "cudaStreamCreate(copy)");
    {
      const char* e = std::getenv("SWITCHBOARD_LORA_STREAM");
      const std::string v = e ? e : "";
      if (v != "" && v != "side" && v != "inline") throw EngineError("SWITCHBOARD_LORA_STREAM=" + v + ": expected side or inline");
      loraSide_ = v == "side";
      // SMs left out of cuBLAS's kernel choice while a step runs LoRA beside it (cublasSetSmCountTarget):
      // a decode GEMM bound by bytes may not need every SM, and the LoRA blocks then find some free.
      const char* n = std::getenv("SWITCHBOARD_LORA_SIDE_SMS");
      if (n && *n) {
        char* end = nullptr;
        const long k = std::strtol(n, &end, 10);
        if (*end != '\0' || k < 0 || k >= prop.multiProcessorCount)
          throw EngineError(std::string("SWITCHBOARD_LORA_SIDE_SMS=") + n + ": expected 0.." + std::to_string(prop.multiProcessorCount - 1));
        loraSideSms_ = int(k);
      }
      smCount_ = prop.multiProcessorCount;
    }
    if (loraSide_) {
      int lo = 0, hi = 0;
      check(cudaDeviceGetStreamPriorityRange(&lo, &hi), "cudaDeviceGetStreamPriorityRange");
      check(cudaStreamCreateWithPriority(&loraStream_, cudaStreamNonBlocking, hi), "cudaStreamCreate(lora)");
      check(cudaEventCreateWithFlags(&loraFork_, cudaEventDisableTiming), "cudaEventCreate");
      check(cudaEventCreateWithFlags(&loraJoin_, cudaEventDisableTiming), "cudaEventCreate");
    }
    check(cudaEventCreate(&stepBegin_), "cudaEventCreate");
    check(cudaEventCreate(&stepEnd_), "cudaEventCreate");
    checkB(cublasCreate(&blas_), "cublasCreate");
    checkB(cublasSetStream(blas_, stream_), "cublasSetStream");
    // Exact fp32 when asked for fp32: no TF32 shortcuts.
    checkB(cublasSetMathMode(blas_, t_ == Elem::F32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    // A workspace of our own, so cuBLAS never allocates while a decode step is being captured.
    blasWs_.reserve(size_t(32) << 20, "cuBLAS workspace");
    checkB(cublasSetWorkspace(blas_, blasWs_.p, blasWs_.bytes), "cublasSetWorkspace");
    hostTable_.assign(static_cast<size_t>(std::max(1, o_.maxAdapters)) * c_.layers * kNumProj, kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    // embed_tokens entries, lm_head entries (maxAdapters each), then per slot each layer's expert LoRA (gate_up, down).
    hostModelTable_.assign((2 + size_t(c_.layers) * 2) * static_cast<size_t>(std::max(1, o_.maxAdapters)), kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    slots_.resize(o_.maxAdapters);
  }

  ~CudaEngine() override {
    if (stream_) cudaStreamSynchronize(stream_);
    clearGraphs();
    if (blas_) cublasDestroy(blas_);
    if (stepBegin_) cudaEventDestroy(stepBegin_);
    if (stepEnd_) cudaEventDestroy(stepEnd_);
    if (stream_) cudaStreamDestroy(stream_);
    if (copyStream_) cudaStreamDestroy(copyStream_);
    if (loraStream_) cudaStreamDestroy(loraStream_);
    if (loraFork_) cudaEventDestroy(loraFork_);
    if (loraJoin_) cudaEventDestroy(loraJoin_);
  }

  void load() override {
    std::lock_guard<std::mutex> lock(stepMu_);
    const int64_t H = c_.hidden, I = c_.intermediate, Q = int64_t(c_.heads) * c_.headDim, KV = int64_t(c_.kvHeads) * c_.headDim, V = c_.vocab;
    auto ref = [&](const std::string& name, std::vector<int64_t> shape) -> const TensorRef& {
      for (auto& r : refs_)
        if (r.name == name) {
          if (r.shape != shape) throw EngineError("tensor " + name + " has an unexpected shape");
          return r;
        }
      throw EngineError("missing tensor " + name);
    };
    upload(embed_, {&ref("model.embed_tokens.weight", {V, H})});
    upload(norm_, {&ref("model.norm.weight", {H})});
    fam_.resize(c_.layers);
    if (!c_.tieWordEmbeddings) upload(lmHead_, {&ref("lm_head.weight", {V, H})});
    layers_.resize(c_.layers);
    for (int l = 0; l < c_.layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer& L = layers_[l];
      upload(L.inNorm, {&ref(p + "input_layernorm.weight", {H})});
      upload(L.postNorm, {&ref(p + "post_attention_layernorm.weight", {H})});
      // q, k and v as one [Q + 2 KV, H] matrix, gate and up as one [2 I, H]: one GEMM each.
      upload(L.wqkv, {&ref(p + "self_attn.q_proj.weight", {Q, H}), &ref(p + "self_attn.k_proj.weight", {KV, H}), &ref(p + "self_attn.v_proj.weight", {KV, H})});
      if (c_.attentionBias)
        upload(L.bqkv, {&ref(p + "self_attn.q_proj.bias", {Q}), &ref(p + "self_attn.k_proj.bias", {KV}), &ref(p + "self_attn.v_proj.bias", {KV})});
      upload(L.wo, {&ref(p + "self_attn.o_proj.weight", {H, Q})});
      loadFamilyLayer(l, ref);
      if (fam_[l].moe) continue;
      upload(L.wgu, {&ref(p + "mlp.gate_proj.weight", {I, H}), &ref(p + "mlp.up_proj.weight", {I, H})});
      upload(L.wd, {&ref(p + "mlp.down_proj.weight", {H, I})});
    }
    refs_.clear();
    const auto inv = ropeInvFreq(c_);
    invFreq_.reserve(inv.size() * 4, "invFreq");
    check(cudaMemcpy(invFreq_.p, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice), "invFreq upload");
    if (c_.ropeLocalTheta > 0) {
      // Gemma 3: sliding-window layers rotate with their own plain base.
      const auto local = plainInvFreq(static_cast<float>(c_.ropeLocalTheta), c_.headDim);
      invFreqLocal_.reserve(local.size() * 4, "invFreq (local)");
      check(cudaMemcpy(invFreqLocal_.p, local.data(), local.size() * 4, cudaMemcpyHostToDevice), "invFreq upload");
    }
    const size_t perLayer = size_t(o_.numBlocks) * o_.blockSize * KV * elemSize(t_);
    kcache_.reserve(perLayer * c_.layers, "KV cache (K)");
    vcache_.reserve(perLayer * c_.layers, "KV cache (V)");
    table_.reserve(hostTable_.size() * sizeof(kern::LoraSlotEntry), "adapter table");
    check(cudaMemcpy(table_.p, hostTable_.data(), hostTable_.size() * sizeof(kern::LoraSlotEntry), cudaMemcpyHostToDevice), "adapter table");
    modelTable_.reserve(hostModelTable_.size() * sizeof(kern::LoraSlotEntry), "adapter table (embed_tokens, lm_head)");
    check(cudaMemcpy(modelTable_.p, hostModelTable_.data(), hostModelTable_.size() * sizeof(kern::LoraSlotEntry), cudaMemcpyHostToDevice), "adapter table");
    check(cudaDeviceSynchronize(), "load");
    loaded_ = true;
  }

  EngineInfo info() const override {
    EngineInfo i;
    i.device = "cuda";
    i.deviceName = deviceName_ + (t_ == Elem::F32 ? " (fp32)" : t_ == Elem::F16 ? " (fp16)" : " (bf16)");
    i.numBlocks = o_.numBlocks;
    i.blockSize = o_.blockSize;
    i.maxAdapters = o_.maxAdapters;
    i.weightBytes = weightBytes_;
    i.graphSteps = graphSteps_.load();
    i.lastStepDeviceMs = lastStepDeviceMs_.load();
    return i;
  }

  void loadAdapter(int slot, const std::vector<LoraModuleSpec>& modules) override {
    if (slot < 0 || slot >= o_.maxAdapters) throw EngineError("adapter slot " + std::to_string(slot) + " out of range");
    auto bufs = std::make_unique<AdapterBufs>();
    std::vector<kern::LoraSlotEntry> entries(size_t(c_.layers) * kNumProj, kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    kern::LoraSlotEntry embedEntry{nullptr, nullptr, 0, 0.0f}, headEntry{nullptr, nullptr, 0, 0.0f};
    std::vector<kern::LoraSlotEntry> expertEntries(size_t(c_.layers) * 2, kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    {
      // Reads and uploads on the copy stream, outside the step lock: steps keep running.
      std::lock_guard<std::mutex> lock(copyMu_);
      for (const auto& m : modules) {
        if (m.proj < 0 || m.proj >= kNumModules) throw EngineError("adapter module out of range");
        if (expertLevel(m.proj)) {
          loadExpertLora(m, *bufs, expertEntries);
          continue;
        }
        const bool model = modelLevel(m.proj);
        if (model ? m.layer != -1 : (m.layer < 0 || m.layer >= c_.layers)) throw EngineError("adapter module out of range");
        // (a MoE layer's gate/up/down are its shared expert's, where it has one: Qwen2-MoE)
        if (!model && !c_.moeLayer.empty() && c_.moeLayer[m.layer] && m.proj >= kGate && c_.sharedExpertIntermediate <= 0)
          throw EngineError("layers." + std::to_string(m.layer) + "." + projName(m.proj) +
                            ": this layer's MLP is a mixture of experts (LoRA on experts is not supported yet)");
        int in, out;
        projDimsAt(c_, m.layer, m.proj, in, out);
        const std::string where = model ? std::string(projName(m.proj)) : "layers." + std::to_string(m.layer) + "." + projName(m.proj);
        if (m.rank <= 0 || m.a.shape != std::vector<int64_t>{m.rank, in} || m.b.shape != std::vector<int64_t>{out, m.rank})
          throw EngineError(where + ": lora_A/lora_B shapes do not fit the base model");
        auto& e = m.proj == kEmbedTokens ? embedEntry : m.proj == kLmHead ? headEntry : entries[size_t(m.layer) * kNumProj + m.proj];
        if (e.rank) throw EngineError("adapter module given twice");
        bufs->bufs.emplace_back();
        uploadOn(copyStream_, bufs->bufs.back(), {&m.a}, copyStage_);
        const void* a = bufs->bufs.back().p;
        bufs->bufs.emplace_back();
        uploadOn(copyStream_, bufs->bufs.back(), {&m.b}, copyStage_);
        e = kern::LoraSlotEntry{a, bufs->bufs.back().p, m.rank, m.scale};
        if (m.proj == kEmbedTokens) bufs->embed = true;
        else if (m.proj == kLmHead) bufs->headRank = m.rank;
        else bufs->maxRank = std::max(bufs->maxRank, m.rank);
      }
      check(cudaStreamSynchronize(copyStream_), "adapter upload");
    }
    std::lock_guard<std::mutex> lock(slotMu_);
    const size_t off = size_t(slot) * c_.layers * kNumProj;
    std::copy(entries.begin(), entries.end(), hostTable_.begin() + off);
    hostModelTable_[slot] = embedEntry;
    hostModelTable_[size_t(std::max(1, o_.maxAdapters)) + slot] = headEntry;
    std::copy(expertEntries.begin(), expertEntries.end(), hostModelTable_.begin() + expertTableOffset(slot));
    // The next step uploads the table before it runs: it changes between steps, never under one
    // (and nothing is enqueued on the step stream while a step may be capturing a graph).
    if (slots_[slot]) graveyard_.push_back(std::move(slots_[slot]));
    slots_[slot] = std::move(bufs);
    tableDirty_ = true;
  }

  void unloadAdapter(int slot) override {
    if (slot < 0 || slot >= o_.maxAdapters) throw EngineError("adapter slot " + std::to_string(slot) + " out of range");
    std::lock_guard<std::mutex> lock(slotMu_);
    const size_t off = size_t(slot) * c_.layers * kNumProj;
    std::fill(hostTable_.begin() + off, hostTable_.begin() + off + size_t(c_.layers) * kNumProj, kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    hostModelTable_[slot] = hostModelTable_[size_t(std::max(1, o_.maxAdapters)) + slot] = kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f};
    std::fill_n(hostModelTable_.begin() + expertTableOffset(slot), size_t(c_.layers) * 2, kern::LoraSlotEntry{nullptr, nullptr, 0, 0.0f});
    tableDirty_ = true;
    // Freed after the next step boundary, when no kernel can still read them.
    if (slots_[slot]) graveyard_.push_back(std::move(slots_[slot]));
  }

  std::vector<SeqOutput> step(const std::vector<SeqInput>& batch) override;

 private:

  void upload(DevBuf& dst, std::vector<const TensorRef*> parts) {
    // Quantized projections stay packed (logits are fp32, so lm_head is dequantised like any other weight).
    if (&dst != &lmHead_ && uploadPacked(dst, parts)) return;
    weightBytes_ += uploadOn(stream_, dst, parts, stage_);
    check(cudaStreamSynchronize(stream_), "weight upload");
  }

  // Concatenates `parts` (row-major, same trailing dims) into dst, converted to the compute type;
  // returns the device bytes written.
  int64_t uploadOn(cudaStream_t s, DevBuf& dst, const std::vector<const TensorRef*>& parts, DevBuf& stage) {
    int64_t total = 0;
    for (auto* p : parts) total += p->numel();
    dst.reserve(size_t(total) * elemSize(t_), "weights");
    int64_t at = 0;
    for (auto* p : parts) {
      const int64_t n = p->numel();
      char* out = static_cast<char*>(dst.p) + at * elemSize(t_);
      if (p->random) {
        checkK(kern::randomFill(t_, out, n, p->randomSeed, p->randomStd, reinterpret_cast<kern::Stream>(s)), "randomFill");
      } else if (!p->hasInline && (p->dtype == DType::F16 || p->dtype == DType::BF16)) {
        std::vector<uint16_t> raw(static_cast<size_t>(n));
        readRaw(*p, raw.data());
        stage.reserve(size_t(n) * 2, "staging");
        check(cudaMemcpyAsync(stage.p, raw.data(), size_t(n) * 2, cudaMemcpyHostToDevice, s), "upload");
        checkK(kern::convert16(t_, stage.as<uint16_t>(), p->dtype == DType::BF16, out, n, reinterpret_cast<kern::Stream>(s)), "convert16");
      } else {
        auto f = readTensorF32(*p);
        stage.reserve(size_t(n) * 4, "staging");
        check(cudaMemcpyAsync(stage.p, f.data(), size_t(n) * 4, cudaMemcpyHostToDevice, s), "upload");
        checkK(kern::convertF32(t_, stage.as<float>(), out, n, reinterpret_cast<kern::Stream>(s)), "convertF32");
      }
      // The host vectors die at the end of this iteration: finish the copy first.
      check(cudaStreamSynchronize(s), "upload");
      at += n;
    }
    return total * int64_t(elemSize(t_));
  }

  static void readRaw(const TensorRef& t, uint16_t* out) {
    FILE* f = std::fopen(t.file.c_str(), "rb");
    if (!f) throw EngineError("opening " + t.file);
    const bool ok = std::fseek(f, long(t.offset), SEEK_SET) == 0 && std::fread(out, 1, size_t(t.nbytes), f) == size_t(t.nbytes);
    std::fclose(f);
    if (!ok) throw EngineError("reading tensor " + t.name + " from " + t.file + ": file is shorter than its header says (truncated?)");
  }

  // y[rows, out] = x[rows, in] W^T (W [out, in] row-major), y in yType.
  void gemm(const void* x, int rows, int in, const DevBuf& w, int out, void* y, cudaDataType yType) {
    if (!quant_.empty()) {
      const auto q = quant_.find(&w);
      if (q != quant_.end()) return quantGemm(x, rows, q->second, y);
    }
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType ct = cudaType(t_);
    checkB(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w.p, ct, in, x, ct, in, &beta, y, yType, out,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmEx");
  }

  // LoRA for the projections of `set` (which share the input x) over every adapter segment: SGMV,
  // except for the segments of gemmSegs_ (long prompt chunks), which run as two cuBLAS GEMMs per
  // projection on tensor cores: tmp = x A^T (rounded to T, as PEFT's lora_A output), then
  // y += scale * tmp B^T (beta = 1). Why: SGMV's CUDA-core shrink and expand are built for a few
  // rows per adapter; a 1024-row chunk took 353 us per layer there.
  void lora(const kern::LoraProjSet& set, const void* x, int in, void* y, int ldy, int nseg, int maxSegRows) {
    if (!anyAdapter_) return;
    const int stride = c_.layers * kNumProj;
    auto st = reinterpret_cast<kern::Stream>(stream_);
    checkK(kern::sgmv(t_, x, in, loraTmp_.as<float>(), maxRank_, y, ldy, table_.as<kern::LoraSlotEntry>(), stride, set,
                      dSegStart_, dSegSlotSgmv_, nseg, maxSegRows, rows_, st), "sgmv");
    const cudaDataType ct = cudaType(t_);
    const size_t es = elemSize(t_);
    const float one = 1.0f, zero = 0.0f;
    for (size_t gi = 0; gi < gemmSegs_.size(); gi++) {
      const LoraSegment& g = gemmSegs_[gi];
      for (int p = 0; p < set.count; p++) {
        const kern::LoraSlotEntry& e = gemmEntries_[gi * stride + set.entryOffset[p]];
        if (e.rank == 0) continue;
        const char* xs = static_cast<const char*>(x) + size_t(g.start) * in * es;
        char* ys = static_cast<char*>(y) + (size_t(g.start) * ldy + set.yCol[p]) * es;
        checkB(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, e.rank, g.rows, in, &one, e.a, ct, in, xs, ct, in, &zero, loraTmp_.p, ct, e.rank,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "LoRA shrink GEMM");
        checkB(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, set.out[p], g.rows, e.rank, &e.scale, e.b, ct, e.rank, loraTmp_.p, ct, e.rank, &one,
                            ys, ct, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "LoRA expand GEMM");
      }
    }
  }

  // LoRA beside the base GEMM (SWITCHBOARD_LORA_STREAM=side): at decode the SGMV kernels are bound by
  // latency, not bytes (one adapter at batch 64: ~12 us a set for ~1 us of bytes), while the GEMM of the
  // same input is bound by weight bytes; on a second, high-priority stream the LoRA runs while the GEMM
  // streams its weights. loraFork starts the set's LoRA (into loraOut_, zeroed first: rows without an
  // adapter add nothing) and says whether it did; loraJoin waits for it and adds it to y, the sum
  // rounded once as PEFT's `result + lora_B(lora_A(x)) * scaling`. Steps with long prompt segments
  // (the cuBLAS LoRA path) run inline.
  bool loraFork(const kern::LoraProjSet& set, const void* x, int in, int ldy, int nseg, int maxSegRows) {
    if (!loraSide_ || !anyAdapter_ || !gemmSegs_.empty() || size_t(rows_) * ldy * elemSize(t_) > loraOut_.bytes) return false;
    check(cudaEventRecord(loraFork_, stream_), "LoRA fork");
    check(cudaStreamWaitEvent(loraStream_, loraFork_, 0), "LoRA fork");
    check(cudaMemsetAsync(loraOut_.p, 0, size_t(rows_) * ldy * elemSize(t_), loraStream_), "LoRA output reset");
    checkK(kern::sgmv(t_, x, in, loraTmp_.as<float>(), maxRank_, loraOut_.p, ldy, table_.as<kern::LoraSlotEntry>(), c_.layers * kNumProj, set,
                      dSegStart_, dSegSlotSgmv_, nseg, maxSegRows, rows_, reinterpret_cast<kern::Stream>(loraStream_)),
           "sgmv (side stream)");
    check(cudaEventRecord(loraJoin_, loraStream_), "LoRA join");
    return true;
  }
  void loraJoin(void* y, int ldy) {
    check(cudaStreamWaitEvent(stream_, loraJoin_, 0), "LoRA join");
    checkK(kern::addTo(t_, y, loraOut_.p, int64_t(rows_) * ldy, reinterpret_cast<kern::Stream>(stream_)), "LoRA add");
  }

  // Adapter segments: neighbouring sequences with the same adapter share one, so its weights are
  // read once per SGMV_ROWS rows rather than once per sequence (the scheduler orders batches by
  // adapter). A sequence with kLoraGemmRows rows or more in a step (a long prompt chunk) is a
  // segment of its own that takes the GEMM path (`gemm`), decided by its own length alone: its
  // numbers then never depend on its neighbours (the two paths round differently).
  struct LoraSegment {
    int start, rows, slot;
    bool gemm;
  };
  // On H100 with rank-16 adapters the GEMMs cost ~100 us a layer at 512 rows and ~230 at 2048 (TTFT
  // with and without an adapter), where SGMV takes 355 at 1024 (kernel bench); at 128 rows their
  // fourteen small cuBLAS calls a layer added 3-10 ms to a prompt, no better than SGMV.
  static constexpr int kLoraGemmRows = 256;
  static std::vector<LoraSegment> segmentsOf(const std::vector<SeqInput>& batch, bool allowGemm) {
    std::vector<LoraSegment> segs;
    int row = 0;
    for (const auto& s : batch) {
      const int n = int(s.tokens.size());
      const bool gemm = allowGemm && s.adapterSlot >= 0 && n >= kLoraGemmRows;
      if (!gemm && !segs.empty() && !segs.back().gemm && segs.back().slot == s.adapterSlot) segs.back().rows += n;
      else segs.push_back({row, n, s.adapterSlot, gemm});
      row += n;
    }
    return segs;
  }

  static kern::LoraProjSet projSet(int layer, std::initializer_list<std::array<int, 3>> projColOut) {
    kern::LoraProjSet s{};
    for (const auto& p : projColOut) {
      s.entryOffset[s.count] = layer * kNumProj + p[0];
      s.yCol[s.count] = p[1];
      s.out[s.count] = p[2];
      s.count++;
    }
    return s;
  }

  // One step's host-side shape. `key` identifies a decode step's CUDA graph: (rows, sequences,
  // logit rows, block-table width, key bucket, adapter segments, longest segment, adapter rank,
  // model-level LoRA: lm_head rank * 4 + 2 if the embedding LoRA runs + 1 if the head LoRA runs).
  using GraphKey = std::tuple<int, int, int, int, int, int, int, int, int>;
  struct StepShape {
    std::vector<int> rowStart, logitRows;
    GraphKey key;
    int prefillTiles = 0;  // tiles of prompt rows for the tensor-core attention
    int pagedRows = 0;     // rows for the paged attention (all of them when prefillTiles is 0)
  };
  static constexpr int kMaxDeviceTopN = 64;
  StepShape prepare(const std::vector<SeqInput>& batch);
  void forward(const StepShape& sh);
  // Issue 18's families (their definitions follow forward()).
  void checkFamilyConfig();
  using RefFn = std::function<const TensorRef&(const std::string&, std::vector<int64_t>)>;
  void loadFamilyLayer(int l, const RefFn& ref);
  void moeMlp(const FamilyLayer& F, int l, int T);
  void sharedExpert(const FamilyLayer& F, int l, int T, int nseg, int maxSegRows);
  // LoRA on MoE expert weights (PEFT target_parameters): entries in hostModelTable_ after the model-level ones.
  size_t expertTableOffset(int slot) const { return 2 * size_t(std::max(1, o_.maxAdapters)) + size_t(slot) * c_.layers * 2; }
  void loadExpertLora(const LoraModuleSpec& m, AdapterBufs& bufs, std::vector<kern::LoraSlotEntry>& entries);
  void expertLora(int l, int which, const void* x, int in, void* y, int out, int n);
  bool reserveMoe(int T);
  // Steps of up to this many rows run their experts in one launch per GEMM (kern::moeGemv), with
  // nothing read back, so MoE decode steps of up to this batch replay CUDA graphs; bigger steps
  // take cuBLAS per expert.
  static constexpr int kMoeGemvRows = 64;
  bool moeGemvOk_ = false;
  cudaGraphExec_t graphFor(const StepShape& sh);
  void clearGraphs();
  std::vector<SeqOutput> finish(const std::vector<SeqInput>& batch, const StepShape& sh);

  ModelConfig c_;
  std::vector<TensorRef> refs_;
  EngineOptions o_;
  Elem t_;
  std::string deviceName_;
  cudaStream_t stream_ = nullptr, copyStream_ = nullptr;
  // LoRA beside the base GEMMs (loraFork): the stream, its fork/join events, its output.
  bool loraSide_ = false;
  int loraSideSms_ = 0, smCount_ = 0, blasSmTarget_ = 0;
  cudaStream_t loraStream_ = nullptr;
  cudaEvent_t loraFork_ = nullptr, loraJoin_ = nullptr;
  DevBuf loraOut_;
  cublasHandle_t blas_ = nullptr;
  DevBuf embed_, norm_, lmHead_, invFreq_, kcache_, vcache_, table_, stage_, copyStage_;
  // LoRA on embed_tokens and lm_head: per slot, the embedding entries then the head entries (maxAdapters
  // each); which loaded slots have any (step(), under the slot lock); whether this step runs them.
  std::vector<kern::LoraSlotEntry> hostModelTable_;
  DevBuf modelTable_, headTmp_;
  bool anyEmbedSlot_ = false, embedLora_ = false, headLora_ = false;
  int maxHeadRank_ = 0;
  int maxExpertRank_ = 0;      // of the loaded slots' expert LoRA (step(), under the slot lock)
  bool expertLora_ = false;    // this step runs it
  int32_t* dSeqSlot_ = nullptr;
  std::vector<Layer> layers_;
  std::vector<FamilyLayer> fam_;
  DevBuf invFreqLocal_, normTmp_;
  MoeBufs moe_;
  bool hasMoe_ = false;
  const float* dRopeFreq_ = nullptr;  // this step's per-sequence inverse frequencies (dynamic, longrope), else null
  std::vector<kern::LoraSlotEntry> hostTable_;
  std::vector<std::unique_ptr<AdapterBufs>> slots_;
  std::vector<std::unique_ptr<AdapterBufs>> graveyard_;
  bool tableDirty_ = false;
  // Per-step workspaces, grown on demand.
  DevBuf meta_, x_, res_, h_, qkv_, att_, attWs_, o_buf_, gu_, act_, logitsIn_, logits_, loraTmp_, finishMeta_, results_, work_, blasWs_;
  PinnedBuf hostMeta_, hostFinish_;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  GraphKey lastKey_{};
  bool graphsBroken_ = false;
  std::atomic<int64_t> graphSteps_{0};
  // Device time of the last step (forward and sampling kernels, between two events): what the
  // GPU spent, beside the wall time a caller sees (host work, copies, the thread hop).
  cudaEvent_t stepBegin_ = nullptr, stepEnd_ = nullptr;
  std::atomic<double> lastStepDeviceMs_{0};
  int32_t *dTokens_ = nullptr, *dPos_ = nullptr, *dRowSeq_ = nullptr, *dSlots_ = nullptr, *dTables_ = nullptr,
          *dSegStart_ = nullptr, *dSegSlot_ = nullptr, *dLogitRows_ = nullptr, *dTiles_ = nullptr, *dPagedRows_ = nullptr,
          *dSegSlotSgmv_ = nullptr;
  // The step's long prompt segments (LoRA through cuBLAS; slot -1 in dSegSlotSgmv_ so SGMV skips
  // them), with host copies of their adapters' table entries taken under the slot lock.
  std::vector<LoraSegment> segs_, gemmSegs_;
  std::vector<kern::LoraSlotEntry> gemmEntries_;
  int maxRank_ = 0;
  int rows_ = 0;  // rows of the step in flight
  bool anyAdapter_ = false;
  std::mutex stepMu_, slotMu_, copyMu_;
  int64_t weightBytes_ = 0;
  bool loaded_ = false;

  // Quantized projections (native/quantized/packed.ts), by the DevBuf a 16-bit projection would occupy
  // (left empty), so the forward pass calls gemm() the same way for both.
  std::map<const DevBuf*, QuantLinear> quant_;
  // GEMV workspace (split-K sums, act-order inputs) sized for kQuantGemvRows rows, the most
  // options.quantGemvRows may send there; the 16-bit copy of the largest quantized projection, for steps
  // of more rows (tensor-core GEMM). Both sized at load, so CUDA graphs never see them move.
  DevBuf quantWs_, quantScratch_;
  static constexpr int kQuantGemvRows = 256;
  bool uploadPacked(DevBuf& dst, const std::vector<const TensorRef*>& parts);
  void quantGemm(const void* x, int rows, const QuantLinear& q, void* y);
};

namespace {

kern::QuantCodebook quantCodebook(PackedCodebook c) {
  switch (c) {
    case PackedCodebook::Lut: return kern::QuantCodebook::Lut4;
    case PackedCodebook::U8: return kern::QuantCodebook::U8;
    case PackedCodebook::S8: return kern::QuantCodebook::S8;
    case PackedCodebook::E4M3: return kern::QuantCodebook::E4M3;
  }
  return kern::QuantCodebook::Lut4;
}

// Whether two packed pieces of one projection can be one matrix (their rows stacked).
bool samePacking(const PackedWeight& a, const PackedWeight& b) {
  return a.layout == b.layout && a.codebook == b.codebook && a.in == b.in && a.groupSize == b.groupSize && a.lut == b.lut && a.perm == b.perm;
}

// The pieces' rows stacked into one packed weight (zero points 0 for a piece that has none: exact).
PackedWeight stackPacked(const std::vector<const PackedWeight*>& ps) {
  PackedWeight w = *ps[0];
  const bool anyZeros = std::any_of(ps.begin(), ps.end(), [](const PackedWeight* p) { return !p->zeros.empty(); });
  if (anyZeros && w.zeros.empty()) w.zeros.assign(w.scales.size(), 0.0f);
  for (size_t i = 1; i < ps.size(); i++) {
    const PackedWeight& p = *ps[i];
    w.out += p.out;
    w.codes.insert(w.codes.end(), p.codes.begin(), p.codes.end());
    w.scales.insert(w.scales.end(), p.scales.begin(), p.scales.end());
    if (anyZeros) {
      if (p.zeros.empty()) w.zeros.insert(w.zeros.end(), p.scales.size(), 0.0f);
      else w.zeros.insert(w.zeros.end(), p.zeros.begin(), p.zeros.end());
    }
  }
  return w;
}

}  // namespace

// Keeps `parts` packed on the device when every one is a packed weight the kernels take; false: the
// caller uploads them as 16-bit weights (readTensorF32 dequantises packed ones on the host).
bool CudaEngine::uploadPacked(DevBuf& dst, const std::vector<const TensorRef*>& parts) {
  std::vector<const PackedWeight*> ps;
  for (const TensorRef* p : parts) {
    if (!p->packed) return false;
    ps.push_back(p->packed.get());
  }
  // Sizes and codebook; the pointers are the host arrays' until the upload replaces them (the check
  // below only asks whether they are there).
  auto view = [](const PackedWeight& p) {
    kern::QuantWeight w{};
    w.out = int(p.out), w.in = int(p.in), w.groupSize = int(p.groupSize), w.codebook = quantCodebook(p.codebook);
    w.codes = p.codes.data();
    w.scales = p.scales.data();
    w.lut = p.lut.empty() ? nullptr : p.lut.data();
    return w;
  };
  for (const PackedWeight* p : ps)
    if (!kern::quantGemvSupports(view(*p))) return false;
  // One matrix when the pieces stack; else one part per piece (act-order: each piece its own permutation).
  std::vector<std::vector<const PackedWeight*>> groups;
  if (std::all_of(ps.begin(), ps.end(), [&](const PackedWeight* p) { return samePacking(*p, *ps[0]); })) groups.push_back(ps);
  else for (const PackedWeight* p : ps) groups.push_back({p});
  QuantLinear q;
  q.in = int(ps[0]->in);
  auto put = [&](DevBuf& buf, const void* data, size_t bytes, const char* what) -> const void* {
    if (bytes == 0) return nullptr;
    buf.reserve(bytes, what);
    check(cudaMemcpy(buf.p, data, bytes, cudaMemcpyHostToDevice), what);
    weightBytes_ += int64_t(bytes);
    return buf.p;
  };
  for (const auto& g : groups) {
    const PackedWeight w = g.size() == 1 ? *g[0] : stackPacked(g);
    QuantPart part;
    part.col = q.out;
    part.w = view(w);
    part.w.codes = put(part.codes, w.codes.data(), w.codes.size(), "quantized weights");
    part.w.scales = static_cast<const float*>(put(part.scales, w.scales.data(), w.scales.size() * 4, "quantized scales"));
    part.w.zeros = static_cast<const float*>(put(part.zeros, w.zeros.data(), w.zeros.size() * 4, "quantized zero points"));
    part.w.lut = static_cast<const float*>(put(part.lut, w.lut.data(), w.lut.size() * 4, "quantized lookup table"));
    part.w.perm = static_cast<const int32_t*>(put(part.perm, w.perm.data(), w.perm.size() * 4, "quantized permutation"));
    q.out += int(w.out);
    q.parts.push_back(std::move(part));
  }
  // Workspaces for the largest projection (at load: captured graphs never see them move).
  int64_t ws = 0;
  for (const QuantPart& p : q.parts) ws = std::max(ws, kern::quantGemvWorkspaceBytes(t_, kQuantGemvRows, p.w));
  quantWs_.reserve(size_t(std::max<int64_t>(ws, 256)), "quantized GEMV workspace");
  quantScratch_.reserve(size_t(q.out) * q.in * elemSize(t_), "quantized weights (16-bit copy for prompt chunks)");
  quant_[&dst] = std::move(q);
  return true;
}

// y [rows, q.out] = x [rows, q.in] W^T: decode-sized steps through the quantized GEMV (each packed weight
// read once per 16 rows), larger ones through a 16-bit copy of W and a tensor-core GEMM.
void CudaEngine::quantGemm(const void* x, int rows, const QuantLinear& q, void* y) {
  auto st = reinterpret_cast<kern::Stream>(stream_);
  const size_t es = elemSize(t_);
  if (rows <= o_.quantGemvRows) {
    for (const QuantPart& p : q.parts)
      checkK(kern::quantGemv(t_, x, rows, p.w, static_cast<char*>(y) + size_t(p.col) * es, q.out, quantWs_.p, int64_t(quantWs_.bytes), st), "quantGemv");
    return;
  }
  for (const QuantPart& p : q.parts)
    checkK(kern::quantDequant(t_, p.w, quantScratch_.as<char>() + size_t(p.col) * q.in * es, st), "quantDequant");
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType ct = cudaType(t_);
  checkB(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, q.out, rows, q.in, &alpha, quantScratch_.p, ct, q.in, x, ct, q.in, &beta, y, ct, q.out,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
         "cublasGemmEx (quantized)");
}

std::vector<SeqOutput> CudaEngine::step(const std::vector<SeqInput>& batch) {
  std::lock_guard<std::mutex> stepLock(stepMu_);
  if (!loaded_) throw EngineError("engine is not loaded");
  {
    std::lock_guard<std::mutex> lock(slotMu_);
    std::vector<bool> loadedSlots(slots_.size());
    maxRank_ = 0;
    maxHeadRank_ = 0;
    maxExpertRank_ = 0;
    anyEmbedSlot_ = false;
    for (size_t i = 0; i < slots_.size(); i++) {
      loadedSlots[i] = slots_[i] != nullptr;
      if (!slots_[i]) continue;
      maxRank_ = std::max(maxRank_, slots_[i]->maxRank);
      maxHeadRank_ = std::max(maxHeadRank_, slots_[i]->headRank);
      maxExpertRank_ = std::max(maxExpertRank_, slots_[i]->expertRank);
      anyEmbedSlot_ = anyEmbedSlot_ || slots_[i]->embed;
    }
    validateBatch(batch, c_, o_, loadedSlots);
    // The step's adapter segments. Steps replayed from CUDA graphs (decode only) keep every
    // segment on SGMV: a graph cannot depend on how rows are spread over segments.
    const bool anyPrompt = std::any_of(batch.begin(), batch.end(), [](const SeqInput& s) { return s.tokens.size() > 1; });
    segs_ = segmentsOf(batch, maxRank_ > 0 && anyPrompt);
    gemmSegs_.clear();
    gemmEntries_.clear();
    const size_t stride = size_t(c_.layers) * kNumProj;
    for (const auto& g : segs_) {
      if (!g.gemm) continue;
      gemmSegs_.push_back(g);
      gemmEntries_.insert(gemmEntries_.end(), hostTable_.begin() + g.slot * stride, hostTable_.begin() + (g.slot + 1) * stride);
    }
    if (tableDirty_) {
      // Pageable source: the copy is staged before this returns, so later edits cannot race it.
      check(cudaMemcpyAsync(table_.p, hostTable_.data(), hostTable_.size() * sizeof(kern::LoraSlotEntry), cudaMemcpyHostToDevice, stream_), "adapter table");
      check(cudaMemcpyAsync(modelTable_.p, hostModelTable_.data(), hostModelTable_.size() * sizeof(kern::LoraSlotEntry), cudaMemcpyHostToDevice, stream_),
            "adapter table");
      tableDirty_ = false;
    }
  }
  if (batch.empty()) return {};
  StepShape sh = prepare(batch);
  const bool decodeOnly = std::all_of(batch.begin(), batch.end(), [](const SeqInput& s) { return s.tokens.size() == 1; });
  // A mixture of experts reads its routing back mid-step past kMoeGemvRows rows: no graphs there.
  const bool capturable = !hasMoe_ || (moeGemvOk_ && int(batch.size()) <= kMoeGemvRows);
  cudaGraphExec_t exec = decodeOnly && o_.cudaGraphs && capturable ? graphFor(sh) : nullptr;
  check(cudaEventRecord(stepBegin_, stream_), "cudaEventRecord");
  if (exec) {
    check(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch");
    graphSteps_++;
  }
  else forward(sh);
  std::vector<SeqOutput> outs = finish(batch, sh);
  {
    // The stream is idle: adapters unloaded before this step can go.
    std::lock_guard<std::mutex> lock(slotMu_);
    graveyard_.clear();
  }
  return outs;
}

// Host-side layout of a step: metadata (tokens, positions, block tables, adapter segments, logit
// rows) uploaded in one copy, and every workspace sized, before anything is enqueued.
CudaEngine::StepShape CudaEngine::prepare(const std::vector<SeqInput>& batch) {
  StepShape sh;
  const int H = c_.hidden, I = c_.intermediate, D = c_.headDim, NH = c_.heads, NKV = c_.kvHeads;
  const int Q = NH * D, KV = NKV * D, QKV = Q + 2 * KV, BS = o_.blockSize;
  const int nseq = int(batch.size());
  int T = 0, maxBlocks = 1, maxKeys = 1;
  anyAdapter_ = false;
  for (const auto& s : batch) {
    T += int(s.tokens.size());
    maxBlocks = std::max(maxBlocks, int(s.blockTable.size()));
    maxKeys = std::max(maxKeys, s.position + int(s.tokens.size()));
    anyAdapter_ = anyAdapter_ || s.adapterSlot >= 0;
  }
  embedLora_ = anyAdapter_ && anyEmbedSlot_;
  headLora_ = anyAdapter_ && maxHeadRank_ > 0;
  expertLora_ = anyAdapter_ && hasMoe_ && maxExpertRank_ > 0;
  anyAdapter_ = anyAdapter_ && maxRank_ > 0;
  // Powers of two: decode steps keep one shape (and one CUDA graph) while contexts grow. Padding
  // block-table entries point at block 0 and are never read; maxKeys only chooses attention splits.
  auto pow2 = [](int v) { int p = 16; while (p < v) p *= 2; return p; };
  maxBlocks = pow2(maxBlocks);
  maxKeys = pow2(maxKeys);
  // Rows whose logits someone needs: all prompt rows with prompt logprobs, else the last.
  sh.rowStart.assign(nseq + 1, 0);
  for (int s = 0; s < nseq; s++) sh.rowStart[s + 1] = sh.rowStart[s] + int(batch[s].tokens.size());
  sh.logitRows = logitRowsOf(batch, sh.rowStart);
  const int NL = int(sh.logitRows.size());
  rows_ = T;
  // Attention: prompt chunks of kPrefillMinRows rows or more run on tensor cores in tiles of
  // kPrefillTileRows, the other rows (decode, short chunks) in the paged kernel through a row list.
  // options.prefillAttention = false sends every row to the paged kernel (for comparisons).
  std::vector<int32_t> tiles, pagedRows;
  if (T > nseq && o_.prefillAttention && kern::prefillAttentionSupported(t_, D)) {
    for (int s = 0; s < nseq; s++) {
      const int r0 = sh.rowStart[s], n = sh.rowStart[s + 1] - r0;
      if (n >= kern::kPrefillMinRows) {
        for (int k = 0; k < n; k += kern::kPrefillTileRows) {
          tiles.push_back(r0 + k);
          tiles.push_back(std::min(kern::kPrefillTileRows, n - k));
        }
      } else {
        for (int r = r0; r < r0 + n; r++) pagedRows.push_back(r);
      }
    }
    if (tiles.empty()) pagedRows.clear();
  }
  sh.prefillTiles = int(tiles.size() / 2);
  sh.pagedRows = sh.prefillTiles > 0 ? int(pagedRows.size()) : T;

  const std::vector<LoraSegment>& segs = segs_;
  const int nseg = int(segs.size());
  // Dynamic NTK / longrope: each sequence's inverse frequencies (floats) close the upload.
  const size_t ropeFloats = ropeDependsOnLength(c_) ? size_t(nseq) * (D / 2) : 0;
  const size_t nInts = size_t(T) * 4 + size_t(nseq) * maxBlocks + (nseq + 1) + nseq + std::max(NL, 1) + tiles.size() + pagedRows.size() +
                       (gemmSegs_.empty() ? 0 : nseg) + nseq + ropeFloats;
  hostMeta_.reserve(nInts * 4);
  int32_t* hm = static_cast<int32_t*>(hostMeta_.p);
  int32_t *hTok = hm, *hPos = hTok + T, *hRowSeq = hPos + T, *hSlots = hRowSeq + T, *hTables = hSlots + T,
          *hSegStart = hTables + size_t(nseq) * maxBlocks, *hSegSlot = hSegStart + nseq + 1, *hLogitRows = hSegSlot + nseq;
  for (int s = 0; s < nseq; s++) {
    const auto& in = batch[s];
    for (int j = 0; j < int(in.tokens.size()); j++) {
      const int r = sh.rowStart[s] + j, pos = in.position + j;
      hTok[r] = in.tokens[j];
      hPos[r] = pos;
      hRowSeq[r] = s;
      hSlots[r] = in.blockTable[pos / BS] * BS + pos % BS;
    }
    for (int b = 0; b < maxBlocks; b++) hTables[size_t(s) * maxBlocks + b] = b < int(in.blockTable.size()) ? in.blockTable[b] : 0;
  }
  // maxSegRows: the longest segment SGMV serves (the GEMM segments are not its business).
  int maxSegRows = 1;
  for (int g = 0; g < nseg; g++) {
    hSegStart[g] = segs[g].start;
    hSegSlot[g] = segs[g].slot;
  }
  hSegStart[nseg] = T;
  for (int i = 0; i < NL; i++) hLogitRows[i] = sh.logitRows[i];
  int32_t *hTiles = hLogitRows + std::max(NL, 1), *hPagedRows = hTiles + tiles.size(), *hSegSlotSgmv = hPagedRows + pagedRows.size();
  std::copy(tiles.begin(), tiles.end(), hTiles);
  std::copy(pagedRows.begin(), pagedRows.end(), hPagedRows);
  for (int g = 0; g < nseg; g++) {
    if (!gemmSegs_.empty()) hSegSlotSgmv[g] = segs[g].gemm ? -1 : segs[g].slot;
    if (!segs[g].gemm) maxSegRows = std::max(maxSegRows, segs[g].rows);
  }
  // Each sequence's adapter slot, for the LoRA of embed_tokens and lm_head (looked up per row on the device).
  int32_t* hSeqSlot = hSegSlotSgmv + (gemmSegs_.empty() ? 0 : nseg);
  for (int s = 0; s < nseq; s++) hSeqSlot[s] = batch[s].adapterSlot;

  if (ropeFloats > 0) {
    float* hf = reinterpret_cast<float*>(hm + (nInts - ropeFloats));
    for (int s = 0; s < nseq; s++) {
      const auto inv = ropeInvFreq(c_, int64_t(batch[s].position) + int64_t(batch[s].tokens.size()));
      std::copy(inv.begin(), inv.end(), hf + size_t(s) * (D / 2));
    }
  }

  const size_t es = elemSize(t_);
  // Every buffer a decode graph bakes in is sized here: if one moves, the captured graphs go.
  bool moved = false;
  moved |= meta_.reserve(nInts * 4, "step metadata");
  moved |= x_.reserve(size_t(T) * H * es, "x");
  moved |= res_.reserve(size_t(T) * H * es, "residual");
  moved |= h_.reserve(size_t(T) * H * es, "h");
  moved |= qkv_.reserve(size_t(T) * QKV * es, "qkv");
  moved |= att_.reserve(size_t(T) * Q * es, "attention");
  moved |= o_buf_.reserve(size_t(T) * H * es, "o");
  moved |= gu_.reserve(size_t(T) * 2 * I * es, "gate/up");
  moved |= act_.reserve(size_t(T) * I * es, "act");
  if (c_.sandwichNorm) moved |= normTmp_.reserve(size_t(T) * H * es, "sandwich norm");
  if (hasMoe_) moved |= reserveMoe(T);
  if (anyAdapter_) moved |= loraTmp_.reserve(size_t(T) * 3 * maxRank_ * 4, "lora tmp");
  if (anyAdapter_ && loraSide_) moved |= loraOut_.reserve(size_t(T) * std::max({QKV, 2 * I, H}) * es, "lora output");
  if (headLora_ && NL > 0) moved |= headTmp_.reserve(size_t(NL) * maxHeadRank_ * 4, "lm_head lora tmp");
  const int64_t wsFloats = kern::attentionWorkspaceFloats(T, NH, NKV, D, maxKeys);
  if (wsFloats > 0) moved |= attWs_.reserve(size_t(wsFloats) * 4, "attention workspace");
  if (NL > 0) {
    moved |= logitsIn_.reserve(size_t(NL) * H * es, "logit rows");
    moved |= logits_.reserve(size_t(NL) * c_.vocab * 4, "logits");
  }
  if (moved) clearGraphs();
  check(cudaMemcpyAsync(meta_.p, hm, nInts * 4, cudaMemcpyHostToDevice, stream_), "metadata upload");
  int32_t* dm = meta_.as<int32_t>();
  dTokens_ = dm;
  dPos_ = dm + (hPos - hm);
  dRowSeq_ = dm + (hRowSeq - hm);
  dSlots_ = dm + (hSlots - hm);
  dTables_ = dm + (hTables - hm);
  dSegStart_ = dm + (hSegStart - hm);
  dSegSlot_ = dm + (hSegSlot - hm);
  dLogitRows_ = dm + (hLogitRows - hm);
  dTiles_ = dm + (hTiles - hm);
  dPagedRows_ = dm + (hPagedRows - hm);
  dSegSlotSgmv_ = gemmSegs_.empty() ? dSegSlot_ : dm + (hSegSlotSgmv - hm);
  dRopeFreq_ = ropeFloats > 0 ? reinterpret_cast<const float*>(dm + (nInts - ropeFloats)) : nullptr;
  dSeqSlot_ = dm + (hSeqSlot - hm);
  sh.key = {T, nseq, NL, maxBlocks, maxKeys, nseg, maxSegRows, anyAdapter_ ? maxRank_ : 0,
            (headLora_ ? maxHeadRank_ * 4 + 1 : 0) + (embedLora_ ? 2 : 0) + (expertLora_ ? (maxExpertRank_ << 16) : 0)};
  return sh;
}

// Embedding to logits, all on the stream; enqueues only (capturable into a CUDA graph).
void CudaEngine::forward(const StepShape& sh) {
  const auto [T, nseq, NL, maxBlocks, maxKeys, nseg, maxSegRows, rank, modelLora] = sh.key;
  {
    // SWITCHBOARD_LORA_SIDE_SMS: cuBLAS picks its kernels for fewer SMs in steps whose LoRA runs beside it.
    const int target = loraSide_ && loraSideSms_ > 0 && anyAdapter_ && gemmSegs_.empty() ? smCount_ - loraSideSms_ : 0;
    if (target != blasSmTarget_) {
      checkB(cublasSetSmCountTarget(blas_, target), "cublasSetSmCountTarget");
      blasSmTarget_ = target;
    }
  }
  (void)nseq;
  (void)rank;
  (void)modelLora;
  const int H = c_.hidden, I = c_.intermediate, D = c_.headDim, NH = c_.heads, NKV = c_.kvHeads;
  const int Q = NH * D, KV = NKV * D, QKV = Q + 2 * KV, V = c_.vocab, BS = o_.blockSize;
  const size_t es = elemSize(t_);
  const int64_t wsFloats = kern::attentionWorkspaceFloats(T, NH, NKV, D, maxKeys);
  auto st = reinterpret_cast<kern::Stream>(stream_);
  const size_t perLayer = size_t(o_.numBlocks) * BS * KV * es;
  const float scale = c_.attnScale > 0 ? c_.attnScale : 1.0f / std::sqrt(float(D));
  char* qkv = qkv_.as<char>();
  // Gemma's norms multiply by (1 + w); everyone else's by w.
  const int rows = T;  // a plain variable: lambdas may not capture structured bindings in C++17
  auto norm = [&](const void* x, void* residual, const DevBuf& w, void* out, const char* what) {
    checkK(c_.gemmaNorm ? kern::gemmaRmsnorm(t_, x, residual, w.p, rows, H, c_.rmsNormEps, out, st)
                        : kern::rmsnorm(t_, x, residual, w.p, rows, H, c_.rmsNormEps, out, st), what);
  };

  if (c_.embedScale != 1.0f) checkK(kern::embeddingScaled(t_, embed_.p, dTokens_, T, H, c_.embedScale, res_.p, st), "embedding");
  else checkK(kern::embedding(t_, embed_.p, dTokens_, T, H, res_.p, st), "embedding");
  if (embedLora_)
    checkK(kern::loraEmbedding(t_, dTokens_, dRowSeq_, dSeqSlot_, T, modelTable_.as<kern::LoraSlotEntry>(), V, H, c_.embedScale, res_.p, st),
           "embed_tokens LoRA");
  for (int l = 0; l < c_.layers; l++) {
    const Layer& L = layers_[l];
    const FamilyLayer& F = fam_[l];
    // Layer 0 normalises the embeddings; later layers first add the previous MLP output.
    if (l == 0) norm(res_.p, nullptr, L.inNorm, h_.p, "rmsnorm");
    else norm(x_.p, res_.p, L.inNorm, h_.p, "rmsnorm");
    const kern::LoraProjSet qkvSet = projSet(l, {{kQ, 0, Q}, {kK, Q, KV}, {kV, Q + KV, KV}});
    bool side = loraFork(qkvSet, h_.p, H, QKV, nseg, maxSegRows);
    gemm(h_.p, T, H, L.wqkv, QKV, qkv_.p, cudaType(t_));
    if (c_.attentionBias) checkK(kern::addBias(t_, qkv_.p, L.bqkv.p, T, QKV, st), "bias");
    if (side) loraJoin(qkv, QKV);
    else lora(qkvSet, h_.p, H, qkv, QKV, nseg, maxSegRows);
    if (c_.qkNorm) {
      checkK(kern::headRmsnorm(t_, qkv, QKV, T, NH, D, F.qNorm.p, c_.rmsNormEps, c_.gemmaNorm, st), "q norm");
      checkK(kern::headRmsnorm(t_, qkv + size_t(Q) * es, QKV, T, NKV, D, F.kNorm.p, c_.rmsNormEps, c_.gemmaNorm, st), "k norm");
    }
    {
      // Gemma 3's sliding-window layers use a plain local base; dynamic NTK and longrope take each
      // sequence's frequencies (uploaded with the step's metadata); yarn and longrope scale cos/sin.
      const bool local = c_.slidingWindow[l] > 0 && c_.ropeLocalTheta > 0;
      const float* inv = local ? invFreqLocal_.as<float>() : dRopeFreq_ ? dRopeFreq_ : invFreq_.as<float>();
      const int32_t* freqRow = !local && dRopeFreq_ ? dRowSeq_ : nullptr;
      const float factor = local ? 1.0f : static_cast<float>(c_.ropeAttentionFactor);
      checkK(kern::rope(t_, qkv, QKV, qkv + size_t(Q) * es, QKV, dPos_, inv, freqRow, factor, T, NH, NKV, D, st), "rope");
    }
    char* kc = kcache_.as<char>() + l * perLayer;
    char* vc = vcache_.as<char>() + l * perLayer;
    checkK(kern::writeKv(t_, qkv + size_t(Q) * es, qkv + size_t(Q + KV) * es, QKV, dSlots_, T, KV, kc, vc, st), "writeKv");
    if (sh.prefillTiles > 0)
      checkK(kern::prefillAttention(t_, qkv, QKV, kc, vc, dTables_, maxBlocks, dRowSeq_, dPos_, dTiles_, sh.prefillTiles, NH, NKV, D, BS,
                                    c_.slidingWindow[l], scale, c_.attnSoftcap, att_.p, st), "prefill attention");
    if (sh.pagedRows > 0)
      checkK(kern::pagedAttention(t_, qkv, QKV, kc, vc, dTables_, maxBlocks, dRowSeq_, dPos_, sh.prefillTiles > 0 ? dPagedRows_ : nullptr,
                                  sh.pagedRows, NH, NKV, D, BS, c_.slidingWindow[l], scale, c_.attnSoftcap, att_.p, maxKeys, attWs_.as<float>(), wsFloats, st),
             "attention");
    const kern::LoraProjSet oSet = projSet(l, {{kO, 0, H}});
    side = loraFork(oSet, att_.p, Q, H, nseg, maxSegRows);
    gemm(att_.p, T, Q, L.wo, H, o_buf_.p, cudaType(t_));
    if (side) loraJoin(o_buf_.p, H);
    else lora(oSet, att_.p, Q, o_buf_.p, H, nseg, maxSegRows);
    if (c_.sandwichNorm) {
      // Gemma: the attention output is normalised before the residual add; the MLP has its own input norm.
      norm(o_buf_.p, nullptr, L.postNorm, normTmp_.p, "post-attention norm");
      norm(normTmp_.p, res_.p, F.preFfNorm, h_.p, "pre-feed-forward norm");
    } else {
      norm(o_buf_.p, res_.p, L.postNorm, h_.p, "rmsnorm");
    }
    if (F.moe) {
      moeMlp(F, l, T);
      if (c_.sharedExpertIntermediate > 0) sharedExpert(F, l, T, nseg, maxSegRows);
      continue;
    }
    const kern::LoraProjSet guSet = projSet(l, {{kGate, 0, I}, {kUp, I, I}});
    side = loraFork(guSet, h_.p, H, 2 * I, nseg, maxSegRows);
    gemm(h_.p, T, H, L.wgu, 2 * I, gu_.p, cudaType(t_));
    if (side) loraJoin(gu_.p, 2 * I);
    else lora(guSet, h_.p, H, gu_.p, 2 * I, nseg, maxSegRows);
    if (c_.geluTanh) checkK(kern::geluTanhMul(t_, gu_.p, gu_.as<char>() + size_t(I) * es, 2 * I, T, I, act_.p, st), "geluTanhMul");
    else checkK(kern::siluMul(t_, gu_.p, gu_.as<char>() + size_t(I) * es, 2 * I, T, I, act_.p, st), "siluMul");
    const kern::LoraProjSet downSet = projSet(l, {{kDown, 0, H}});
    void* down = c_.sandwichNorm ? normTmp_.p : x_.p;
    side = loraFork(downSet, act_.p, I, H, nseg, maxSegRows);
    gemm(act_.p, T, I, L.wd, H, down, cudaType(t_));
    if (side) loraJoin(down, H);
    else lora(downSet, act_.p, I, down, H, nseg, maxSegRows);
    if (c_.sandwichNorm) norm(normTmp_.p, nullptr, F.postFfNorm, x_.p, "post-feed-forward norm");
  }
  if (NL > 0) {
    norm(x_.p, res_.p, norm_, h_.p, "final rmsnorm");
    checkK(kern::embedding(t_, h_.p, dLogitRows_, NL, H, logitsIn_.p, st), "gather rows");
    gemm(logitsIn_.p, NL, H, c_.tieWordEmbeddings ? embed_ : lmHead_, V, logits_.p, CUDA_R_32F);
    // lm_head LoRA on the base head (tied or not), before soft-capping.
    if (headLora_)
      checkK(kern::loraLogits(t_, logitsIn_.p, dLogitRows_, dRowSeq_, dSeqSlot_, NL, modelTable_.as<kern::LoraSlotEntry>() + std::max(1, o_.maxAdapters),
                              maxHeadRank_, H, V, headTmp_.as<float>(), logits_.as<float>(), st),
             "lm_head LoRA");
    if (c_.finalSoftcap > 0) checkK(kern::softcap(logits_.as<float>(), int64_t(NL) * V, c_.finalSoftcap, st), "final soft-capping");
  }
}

// The model features of issue 18's families that the config alone decides (cuda-shapes.cc has
// already refused what no kernel serves): the same checks as the CPU engine's constructor.
void CudaEngine::checkFamilyConfig() {
  if (c_.ropeType == RopeType::LongRope &&
      (int(c_.ropeShortFactor.size()) != c_.headDim / 2 || int(c_.ropeLongFactor.size()) != c_.headDim / 2))
    throw EngineError("longrope needs head_dim / 2 short and long factors");
  if (!c_.moeLayer.empty() && static_cast<int>(c_.moeLayer.size()) != c_.layers) throw EngineError("moeLayers needs one entry per layer");
  if (c_.moeLayer.empty()) c_.moeLayer.assign(c_.layers, 0);
  for (auto m : c_.moeLayer) {
    if (!m) continue;
    if (c_.numExperts <= 0 || c_.expertsPerToken <= 0 || c_.expertsPerToken > c_.numExperts || c_.moeIntermediate <= 0)
      throw EngineError("mixture-of-experts layers need numExperts >= expertsPerToken > 0 and moeIntermediateSize > 0");
    hasMoe_ = true;
    moeGemvOk_ = true;  // until a layer's experts say otherwise (loadFamilyLayer)
  }
}

// Layer l's family weights: q/k norms, Gemma's feed-forward norms, or the experts of a MoE MLP.
void CudaEngine::loadFamilyLayer(int l, const RefFn& ref) {
  const int64_t H = c_.hidden, D = c_.headDim;
  const std::string p = "model.layers." + std::to_string(l) + ".";
  FamilyLayer& F = fam_[l];
  if (c_.qkNorm) {
    upload(F.qNorm, {&ref(p + "self_attn.q_norm.weight", {D})});
    upload(F.kNorm, {&ref(p + "self_attn.k_norm.weight", {D})});
  }
  if (c_.sandwichNorm) {
    upload(F.preFfNorm, {&ref(p + "pre_feedforward_layernorm.weight", {H})});
    upload(F.postFfNorm, {&ref(p + "post_feedforward_layernorm.weight", {H})});
  }
  if (!c_.moeLayer[l]) return;
  const int64_t E = c_.numExperts, M = c_.moeIntermediate;
  F.moe = true;
  upload(F.router, {&ref(p + "mlp.gate.weight", {E, H})});
  F.expGU.resize(E);
  F.expD.resize(E);
  for (int64_t e = 0; e < E; e++) {
    const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
    upload(F.expGU[e], {&ref(q + "gate_proj.weight", {M, H}), &ref(q + "up_proj.weight", {M, H})});
    upload(F.expD[e], {&ref(q + "down_proj.weight", {H, M})});
  }
  if (c_.sharedExpertIntermediate > 0) {
    const int64_t S = c_.sharedExpertIntermediate;
    upload(F.sharedGU, {&ref(p + "mlp.shared_expert.gate_proj.weight", {S, H}), &ref(p + "mlp.shared_expert.up_proj.weight", {S, H})});
    upload(F.sharedD, {&ref(p + "mlp.shared_expert.down_proj.weight", {H, S})});
    upload(F.sharedGate, {&ref(p + "mlp.shared_expert_gate.weight", {1, H})});
  }
  std::vector<const void*> gu(E), d(E);
  bool dense = true;  // quantized experts stay packed (quant_): only cuBLAS-path gemm() serves them
  for (int64_t e = 0; e < E; e++) {
    gu[e] = F.expGU[e].p, d[e] = F.expD[e].p;
    dense = dense && gu[e] && d[e] && !quant_.count(&F.expGU[e]) && !quant_.count(&F.expD[e]);
  }
  F.guPtrs.reserve(E * sizeof(void*), "expert addresses");
  F.dPtrs.reserve(E * sizeof(void*), "expert addresses");
  check(cudaMemcpy(F.guPtrs.p, gu.data(), E * sizeof(void*), cudaMemcpyHostToDevice), "expert addresses");
  check(cudaMemcpy(F.dPtrs.p, d.data(), E * sizeof(void*), cudaMemcpyHostToDevice), "expert addresses");
  moeGemvOk_ = moeGemvOk_ && dense && int64_t(c_.hidden) * int64_t(elemSize(t_)) <= 48 * 1024 && M * int64_t(elemSize(t_)) <= 48 * 1024;
}

// Sizes the MoE step buffers for T rows (prepare() calls it before a graph may capture the step).
bool CudaEngine::reserveMoe(int T) {
  const int H = c_.hidden, E = c_.numExperts, K = c_.expertsPerToken, M = c_.moeIntermediate;
  const size_t es = elemSize(t_), n = size_t(T) * K;
  bool moved = false;
  moved |= moe_.logits.reserve(size_t(T) * E * es, "router logits");
  // ints: choice [n], order [n], slotPos [n], offsets [E + 1].
  moved |= moe_.ints.reserve((3 * n + E + 1) * 4, "routing");
  moved |= moe_.weights.reserve(n * 4, "routing weights");
  moved |= moe_.xg.reserve(n * H * es, "expert inputs");
  // (the shared expert, S wide, reuses gu and act once the routed experts are combined)
  const size_t S = size_t(std::max(0, c_.sharedExpertIntermediate));
  moved |= moe_.gu.reserve(std::max(n * 2 * M, size_t(T) * 2 * S) * es, "expert gate/up");
  moved |= moe_.act.reserve(std::max(n * M, size_t(T) * S) * es, "expert activations");
  moved |= moe_.y.reserve(n * H * es, "expert outputs");
  return moved;
}

// The mixture-of-experts MLP of one layer, h_ -> x_, as transformers' Qwen3-MoE block: router
// logits in T, softmax in fp32, top-k (renormalised when the config says so), each expert's rows
// gathered and run through its gate|up and down GEMMs, outputs weighted and added in ascending
// expert order. Up to kMoeGemvRows rows, every expert's GEMM is one launch (kern::moeGemv, nothing
// read back: capturable); beyond, cuBLAS per expert that has rows (the row counts are read back).
void CudaEngine::moeMlp(const FamilyLayer& F, int l, int T) {
  const int H = c_.hidden, E = c_.numExperts, K = c_.expertsPerToken, M = c_.moeIntermediate;
  const size_t es = elemSize(t_), n = size_t(T) * K;
  auto st = reinterpret_cast<kern::Stream>(stream_);
  reserveMoe(T);  // already sized by prepare(): no allocation here
  int32_t* choice = moe_.ints.as<int32_t>();
  int32_t *order = choice + n, *slotPos = order + n, *offsets = slotPos + n;
  gemm(h_.p, T, H, F.router, E, moe_.logits.p, cudaType(t_));
  checkK(kern::moeRoute(t_, moe_.logits.p, T, E, K, c_.normTopkProb, choice, moe_.weights.as<float>(), st), "moeRoute");
  checkK(kern::moePlan(choice, T, K, E, offsets, order, slotPos, st), "moePlan");
  checkK(kern::moeGather(t_, h_.p, order, int(n), K, H, moe_.xg.p, st), "moeGather");
  char *xg = moe_.xg.as<char>(), *gu = moe_.gu.as<char>(), *act = moe_.act.as<char>(), *y = moe_.y.as<char>();
  if (T <= kMoeGemvRows && moeGemvOk_) {
    checkK(kern::moeGemv(t_, xg, H, offsets, F.guPtrs.as<const void* const>(), E, 2 * M, gu, st), "moeGemv (gate/up)");
    if (expertLora_) expertLora(l, 0, xg, H, gu, 2 * M, int(n));
    checkK(kern::siluMul(t_, gu, gu + size_t(M) * es, 2 * M, int(n), M, act, st), "siluMul (experts)");
    checkK(kern::moeGemv(t_, act, M, offsets, F.dPtrs.as<const void* const>(), E, H, y, st), "moeGemv (down)");
    if (expertLora_) expertLora(l, 1, act, M, y, H, int(n));
    checkK(kern::moeCombine(t_, y, choice, moe_.weights.as<float>(), slotPos, T, K, H, x_.p, st), "moeCombine");
    return;
  }
  moe_.hostOffsets.reserve(size_t(E + 1) * 4);
  int32_t* hostOff = static_cast<int32_t*>(moe_.hostOffsets.p);
  check(cudaMemcpyAsync(hostOff, offsets, size_t(E + 1) * 4, cudaMemcpyDeviceToHost, stream_), "expert offsets");
  check(cudaStreamSynchronize(stream_), "expert routing");
  for (int e = 0; e < E; e++) {
    const int r0 = hostOff[e], rows = hostOff[e + 1] - r0;
    if (rows > 0) gemm(xg + size_t(r0) * H * es, rows, H, F.expGU[e], 2 * M, gu + size_t(r0) * 2 * M * es, cudaType(t_));
  }
  if (expertLora_) expertLora(l, 0, xg, H, gu, 2 * M, int(n));
  checkK(kern::siluMul(t_, gu, gu + size_t(M) * es, 2 * M, int(n), M, act, st), "siluMul (experts)");
  for (int e = 0; e < E; e++) {
    const int r0 = hostOff[e], rows = hostOff[e + 1] - r0;
    if (rows > 0) gemm(act + size_t(r0) * M * es, rows, M, F.expD[e], H, y + size_t(r0) * H * es, cudaType(t_));
  }
  if (expertLora_) expertLora(l, 1, act, M, y, H, int(n));
  checkK(kern::moeCombine(t_, y, choice, moe_.weights.as<float>(), slotPos, T, K, H, x_.p, st), "moeCombine");
}

// One module of an adapter's LoRA on expert weights: lora_A [E*r, in] as PEFT stores it (expert e's rows
// e*r..), lora_B [out, r*E] (expert e's column k at k*E + e) regrouped to [E][out][r] so each expert's
// factor is contiguous, both uploaded in T.
void CudaEngine::loadExpertLora(const LoraModuleSpec& m, AdapterBufs& bufs, std::vector<kern::LoraSlotEntry>& entries) {
  const std::string where = "layers." + std::to_string(m.layer) + "." + projName(m.proj);
  if (m.layer < 0 || m.layer >= c_.layers || c_.moeLayer.empty() || !c_.moeLayer[m.layer]) throw EngineError(where + ": this layer has no experts");
  int in, out;
  projDims(c_, m.proj, in, out);
  const int64_t E = c_.numExperts, R = int64_t(m.rank) * E;
  if (m.rank <= 0 || m.a.shape != std::vector<int64_t>{R, in} || m.b.shape != std::vector<int64_t>{out, R})
    throw EngineError(where + ": lora_A/lora_B shapes do not fit the base model's experts");
  kern::LoraSlotEntry& e = entries[size_t(m.layer) * 2 + (m.proj == kExpertGateUp ? 0 : 1)];
  if (e.rank) throw EngineError(where + ": given twice");
  const std::vector<float> b = readTensorF32(m.b);
  TensorRef grouped;
  grouped.name = m.b.name;
  grouped.shape = {E * out, m.rank};
  grouped.hasInline = true;
  grouped.inlineData.resize(b.size());
  for (int64_t x = 0; x < E; x++)
    for (int64_t o = 0; o < out; o++)
      for (int64_t k = 0; k < m.rank; k++) grouped.inlineData[(x * out + o) * m.rank + k] = b[o * R + k * E + x];
  bufs.bufs.emplace_back();
  uploadOn(copyStream_, bufs.bufs.back(), {&m.a}, copyStage_);
  const void* a = bufs.bufs.back().p;
  bufs.bufs.emplace_back();
  uploadOn(copyStream_, bufs.bufs.back(), {&grouped}, copyStage_);
  e = kern::LoraSlotEntry{a, bufs.bufs.back().p, m.rank, m.scale};
  bufs.expertRank = std::max(bufs.expertRank, m.rank);
}

// y[i, :out] += scale * B_e A_e x[i] for the n grouped expert rows whose sequence's adapter has LoRA on
// this layer's experts (which: 0 gate_up, 1 down), PEFT's ParamWrapper delta; rows are in moePlan's order.
void CudaEngine::expertLora(int l, int which, const void* x, int in, void* y, int out, int n) {
  const int32_t* choice = moe_.ints.as<int32_t>();  // moeMlp's layout: choice [n], order [n], ...
  const int32_t* order = choice + n;
  checkK(kern::moeLora(t_, x, in, y, out, out, n, c_.expertsPerToken, order, choice, dRowSeq_, dSeqSlot_,
                       modelTable_.as<kern::LoraSlotEntry>() + expertTableOffset(0), c_.layers * 2, l * 2 + which, maxExpertRank_,
                       reinterpret_cast<kern::Stream>(stream_)),
         "moeLora");
}

// Qwen2-MoE's shared expert, added to the routed experts' sum in x_: x_ += sigmoid(h_ . gate) *
// down(silu(gate_proj h_) * up_proj h_), as Qwen2MoeSparseMoeBlock (rounded to T after the sigmoid,
// the product and the add). Its buffers are the routed experts' (free once moeCombine has run); the
// gate logits take the router logits' (read by moeRoute already).
void CudaEngine::sharedExpert(const FamilyLayer& F, int l, int T, int nseg, int maxSegRows) {
  const int H = c_.hidden, S = c_.sharedExpertIntermediate;
  const size_t es = elemSize(t_);
  auto st = reinterpret_cast<kern::Stream>(stream_);
  char *gu = moe_.gu.as<char>(), *act = moe_.act.as<char>();
  // Its LoRA (PEFT's gate/up/down_proj inside mlp.shared_expert) sits in the layer's gate/up/down slots.
  gemm(h_.p, T, H, F.sharedGU, 2 * S, gu, cudaType(t_));
  lora(projSet(l, {{kGate, 0, S}, {kUp, S, S}}), h_.p, H, gu, 2 * S, nseg, maxSegRows);
  checkK(kern::siluMul(t_, gu, gu + size_t(S) * es, 2 * S, T, S, act, st), "siluMul (shared expert)");
  gemm(act, T, S, F.sharedD, H, moe_.y.p, cudaType(t_));
  lora(projSet(l, {{kDown, 0, H}}), act, S, moe_.y.p, H, nseg, maxSegRows);
  gemm(h_.p, T, H, F.sharedGate, 1, moe_.logits.p, cudaType(t_));
  checkK(kern::moeSharedAdd(t_, moe_.y.p, moe_.logits.p, T, H, x_.p, st), "moeSharedAdd");
}

// A decode step's forward pass as a CUDA graph (hundreds of launches become one), captured the
// second time a shape is seen in a row, so batches that change every step never pay for captures.
cudaGraphExec_t CudaEngine::graphFor(const StepShape& sh) {
  if (graphsBroken_) return nullptr;
  auto it = graphs_.find(sh.key);
  if (it != graphs_.end()) return it->second;
  const bool repeat = sh.key == lastKey_;
  lastKey_ = sh.key;
  if (!repeat) return nullptr;
  if (graphs_.size() >= 32) clearGraphs();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::string why;
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    why = "cudaStreamBeginCapture failed";
  } else {
    try {
      forward(sh);
    } catch (const std::exception& e) {
      why = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (why.empty() && end != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
    // With the LoRA side stream, its kernels keep their stream's (higher) priority inside the graph.
    const unsigned long long flags = loraSide_ ? cudaGraphInstantiateFlagUseNodePriority : 0;
    if (why.empty() && cudaGraphInstantiate(&exec, graph, flags) != cudaSuccess) why = "cudaGraphInstantiate failed";
    if (graph) cudaGraphDestroy(graph);
  }
  if (!why.empty()) {
    // Never fatal: this engine runs eagerly from now on.
    cudaGetLastError();
    if (exec) cudaGraphExecDestroy(exec);
    graphsBroken_ = true;
    std::fprintf(stderr, "switchboard: CUDA graph capture failed (%s); decode steps run without graphs\n", why.c_str());
    return nullptr;
  }
  graphs_.emplace(sh.key, exec);
  return exec;
}

void CudaEngine::clearGraphs() {
  for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g);
  graphs_.clear();
}

// Logit rows -> tokens, logprobs and alternatives on the device (sampling.cuh); only a row that
// asks for typical-p sampling or more than kMaxDeviceTopN alternatives is finished on the host.
std::vector<SeqOutput> CudaEngine::finish(const std::vector<SeqInput>& batch, const StepShape& sh) {
  const int nseq = int(batch.size()), NL = int(sh.logitRows.size()), V = c_.vocab;
  std::vector<SeqOutput> outs(nseq);
  auto synchronize = [&] {
    check(cudaEventRecord(stepEnd_, stream_), "cudaEventRecord");
    check(cudaStreamSynchronize(stream_), "step");
    float ms = 0;
    if (cudaEventElapsedTime(&ms, stepBegin_, stepEnd_) == cudaSuccess) lastStepDeviceMs_ = ms;
  };
  if (NL == 0) {
    synchronize();
    return outs;
  }
  auto indexOf = [&](int r) { return int(std::lower_bound(sh.logitRows.begin(), sh.logitRows.end(), r) - sh.logitRows.begin()); };
  std::vector<kern::RowFinish> rf(NL, kern::RowFinish{0, 0, 0.0f, 1.0f, 1.0f, 0, -1, 0, 0, -1, 0, 0, 0, 0, 0});
  std::vector<uint32_t> masks;
  std::vector<int32_t> pens;
  std::vector<bool> onHost(nseq, false);
  int maxTopN = 0, workRows = 0;
  for (int s = 0; s < nseq; s++) {
    const auto& in = batch[s];
    const SamplingParams& p = in.sampling;
    onHost[s] = in.topLogprobs > kMaxDeviceTopN || (in.sample && p.temperature > 0 && p.typicalP < 1.0f);
    if (onHost[s]) continue;
    const int n = int(in.tokens.size());
    const ScoredRows sr = scoredRows(in);
    for (int j = sr.first; j < sr.end; j++) {
      kern::RowFinish& r = rf[indexOf(sh.rowStart[s] + j)];
      r.target = scoredTarget(in, j);
      r.topN = in.topLogprobs;
    }
    if (!in.sample) continue;
    kern::RowFinish& r = rf[indexOf(sh.rowStart[s + 1] - 1)];
    r.sample = 1;
    r.topN = in.topLogprobs;
    r.seed = p.seed;
    r.position = uint64_t(in.position) + uint64_t(n);
    r.temperature = p.temperature;
    r.topK = p.topK;
    r.topP = p.topP;
    r.repetitionPenalty = p.repetitionPenalty;
    if (!in.mask.empty()) {
      r.maskOffset = int(masks.size());
      masks.insert(masks.end(), in.mask.begin(), in.mask.end());
    }
    if (p.repetitionPenalty != 1.0f && !in.penaltyTokens.empty()) {
      std::vector<int32_t> seen(in.penaltyTokens);
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      r.penaltyOffset = int(pens.size());
      r.penaltyCount = int(seen.size());
      pens.insert(pens.end(), seen.begin(), seen.end());
    }
    if (!in.biasTokens.empty()) {
      // Token ids, then their float bits, in the same 4-byte pool as the penalty tokens.
      r.biasOffset = int(pens.size());
      r.biasCount = int(in.biasTokens.size());
      pens.insert(pens.end(), in.biasTokens.begin(), in.biasTokens.end());
      for (float v : in.biasValues) {
        int32_t w;
        std::memcpy(&w, &v, 4);
        pens.push_back(w);
      }
    }
    if (r.temperature > 0 || r.maskOffset >= 0 || r.penaltyCount > 0 || r.biasCount > 0) r.workRow = workRows++;
  }
  for (const auto& r : rf) maxTopN = std::max(maxTopN, r.topN);
  const int stride = 4 + 2 * maxTopN;
  // One upload: row parameters, then masks, then penalty tokens (all 4-byte aligned).
  const size_t paramBytes = sizeof(kern::RowFinish) * NL, maskBytes = masks.size() * 4, penBytes = pens.size() * 4;
  hostFinish_.reserve(paramBytes + maskBytes + penBytes + size_t(NL) * stride * 4);
  char* hf = static_cast<char*>(hostFinish_.p);
  std::memcpy(hf, rf.data(), paramBytes);
  if (maskBytes) std::memcpy(hf + paramBytes, masks.data(), maskBytes);
  if (penBytes) std::memcpy(hf + paramBytes + maskBytes, pens.data(), penBytes);
  finishMeta_.reserve(paramBytes + maskBytes + penBytes + 4, "sampling parameters");
  results_.reserve(size_t(NL) * stride * 4, "sampling results");
  if (workRows) work_.reserve(size_t(workRows) * V * 4, "sampling workspace");
  check(cudaMemcpyAsync(finishMeta_.p, hf, paramBytes + maskBytes + penBytes, cudaMemcpyHostToDevice, stream_), "sampling parameters");
  char* fm = finishMeta_.as<char>();
  checkK(kern::finishRows(logits_.as<float>(), NL, V, reinterpret_cast<const kern::RowFinish*>(fm), reinterpret_cast<const uint32_t*>(fm + paramBytes),
                          reinterpret_cast<const int32_t*>(fm + paramBytes + maskBytes), work_.as<float>(), results_.as<int32_t>(), stride,
                          reinterpret_cast<kern::Stream>(stream_)),
         "finishRows");
  int32_t* res = reinterpret_cast<int32_t*>(hf + paramBytes + maskBytes + penBytes);
  check(cudaMemcpyAsync(res, results_.p, size_t(NL) * stride * 4, cudaMemcpyDeviceToHost, stream_), "sampling results");
  synchronize();

  auto asFloat = [](int32_t w) { float f; std::memcpy(&f, &w, 4); return f; };
  auto topOf = [&](const int32_t* rr, int n) {
    TopLogprobs t;
    for (int k = 0; k < n; k++) {
      t.ids.push_back(rr[4 + 2 * k]);
      t.logprobs.push_back(asFloat(rr[5 + 2 * k]));
    }
    return t;
  };
  std::vector<float> row(V);
  for (int s = 0; s < nseq; s++) {
    const auto& in = batch[s];
    SeqOutput& out = outs[s];
    if (onHost[s]) {
      finishOnHost(in, V, [&](int j) -> const float* {
        const int i = indexOf(sh.rowStart[s] + j);
        check(cudaMemcpy(row.data(), logits_.as<float>() + size_t(i) * V, size_t(V) * 4, cudaMemcpyDeviceToHost), "logits row");
        return row.data();
      }, out);
      continue;
    }
    const ScoredRows sr = scoredRows(in);
    out.hasPromptLogprobs = in.promptLogprobs || in.nextToken >= 0;
    for (int j = sr.first; j < sr.end; j++) {
      const int32_t* rr = res + size_t(indexOf(sh.rowStart[s] + j)) * stride;
      out.promptLogprobs.push_back(asFloat(rr[2]));
      if (in.topLogprobs > 0) out.promptTop.push_back(topOf(rr, in.topLogprobs));
    }
    if (!in.sample) continue;
    const int32_t* rr = res + size_t(indexOf(sh.rowStart[s + 1] - 1)) * stride;
    if (rr[3] == 1) throw EngineError("the token mask allows no token");
    out.token = rr[0];
    out.logprob = asFloat(rr[1]);
    if (in.topLogprobs > 0) {
      out.hasTop = true;
      out.top = topOf(rr, in.topLogprobs);
    }
  }
  return outs;
}

}  // namespace

std::unique_ptr<Engine> makeCudaEngine(ModelConfig config, std::vector<TensorRef> tensors, EngineOptions options) {
  const std::string& dtype = options.dtype;
  Elem t;
  if (dtype == "float32") t = Elem::F32;
  else if (dtype == "float16") t = Elem::F16;
  else if (dtype == "bfloat16") t = Elem::BF16;
  else throw EngineError("dtype must be float32, float16 or bfloat16, got " + dtype);
  return std::make_unique<CudaEngine>(std::move(config), std::move(tensors), options, t);
}

int cudaDevices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

bool cudaMemory(size_t& freeBytes, size_t& totalBytes) {
  return cudaMemGetInfo(&freeBytes, &totalBytes) == cudaSuccess;
}

}  // namespace sb
