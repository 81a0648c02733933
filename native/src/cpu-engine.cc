// The CPU engine: fp32 reference implementation of the whole step. It is what CI and laptops
// run, and the yardstick the CUDA engine is compared with. Every output row is computed by the
// same loops whatever else is in the batch, so heterogeneous batching never changes a number.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>

#include "engine.h"
#include "finish.h"
#include "tensor-io.h"
#include "thread-pool.h"
#include "rope.h"

namespace sb {
namespace {

typedef float v8f __attribute__((vector_size(32)));

// Fixed-order dot product: 8 lanes, then a fixed lane reduction, then the tail.
inline float dot(const float* a, const float* b, int n) {
  v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f va, vb;
    std::memcpy(&va, a + i, sizeof va);
    std::memcpy(&vb, b + i, sizeof vb);
    acc += va * vb;
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

struct LayerWeights {
  std::vector<float> inNorm, postNorm;
  std::vector<float> preFfNorm, postFfNorm;  // Gemma's sandwich norms
  std::vector<float> qNorm, kNorm;           // per-head q/k norms [headDim]
  bool moe = false;
  std::vector<float> router;                             // [numExperts][hidden]
  std::vector<std::array<std::vector<float>, 3>> experts;  // gate [m][H], up [m][H], down [H][m]
  std::vector<float> sharedGate;                         // Qwen2-MoE: shared_expert_gate [1][H]
  // [out][in], Hugging Face layout; in a MoE layer w[kGate/kUp/kDown] are the shared expert's (if any).
  std::array<std::vector<float>, kNumProj> w;
  std::vector<float> bq, bk, bv;
};

struct LoraWeights {
  int rank = 0;
  float scale = 0;
  std::vector<float> a, b;  // a: [rank][in], b: [out][rank]
};

// LoRA on one MoE layer's fused expert weights, regrouped per expert: a [E][rank][in] (PEFT's lora_A
// as stored), b [E][out][rank] (from PEFT's lora_B [out][rank * E], column k * E + e).
struct ExpertLora {
  int rank = 0;
  float scale = 0;
  std::vector<float> a, b;
};

struct Adapter {
  std::vector<std::array<LoraWeights, kNumProj>> layers;
  std::vector<std::array<ExpertLora, 2>> experts;  // per layer: gate_up, down
  LoraWeights embed;  // a: lora_embedding_A [rank][vocab], b: lora_embedding_B [hidden][rank]
  LoraWeights head;   // a: [rank][hidden], b: [vocab][rank]
};

class CpuEngine final : public Engine {
 public:
  CpuEngine(ModelConfig c, std::vector<TensorRef> tensors, EngineOptions o)
      : c_(std::move(c)), refs_(std::move(tensors)), o_(o),
        pool_(o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency())) {
    if (o_.numBlocks <= 0 || o_.blockSize <= 0) throw EngineError("numBlocks and blockSize must be > 0");
    if (o_.maxAdapters < 0) throw EngineError("maxAdapters must be >= 0");
    if (c_.heads % c_.kvHeads != 0) throw EngineError("num_attention_heads must be a multiple of num_key_value_heads");
    if (c_.headDim % 2 != 0) throw EngineError("head_dim must be even");
    if (static_cast<int>(c_.slidingWindow.size()) != c_.layers) c_.slidingWindow.assign(c_.layers, 0);
    if (c_.ropeType == RopeType::LongRope &&
        (int(c_.ropeShortFactor.size()) != c_.headDim / 2 || int(c_.ropeLongFactor.size()) != c_.headDim / 2))
      throw EngineError("longrope needs head_dim / 2 short and long factors");
    if (!c_.moeLayer.empty() && static_cast<int>(c_.moeLayer.size()) != c_.layers) throw EngineError("moeLayers needs one entry per layer");
    if (c_.moeLayer.empty()) c_.moeLayer.assign(c_.layers, 0);
    for (auto m : c_.moeLayer)
      if (m && (c_.numExperts <= 0 || c_.expertsPerToken <= 0 || c_.expertsPerToken > c_.numExperts || c_.moeIntermediate <= 0))
        throw EngineError("mixture-of-experts layers need numExperts >= expertsPerToken > 0 and moeIntermediateSize > 0");
    slots_.resize(o_.maxAdapters);
    invFreq_ = ropeInvFreq(c_);
    if (c_.ropeLocalTheta > 0) invFreqLocal_ = plainInvFreq(static_cast<float>(c_.ropeLocalTheta), c_.headDim);
  }

  void load() override {
    auto find = [&](const std::string& name, std::vector<int64_t> shape, bool required = true) {
      for (auto& r : refs_) {
        if (r.name != name) continue;
        if (r.shape != shape) throw EngineError("tensor " + name + " has an unexpected shape");
        auto v = readTensorF32(r);
        weightBytes_ += static_cast<int64_t>(v.size()) * 4;
        return v;
      }
      if (required) throw EngineError("missing tensor " + name);
      return std::vector<float>();
    };
    // Gemma's norms scale by (1 + w), computed in fp32 as transformers does: folded in once here.
    auto findNorm = [&](const std::string& name, int64_t n) {
      auto v = find(name, {n});
      if (c_.gemmaNorm)
        for (auto& e : v) e = 1.0f + e;
      return v;
    };
    const int64_t H = c_.hidden, I = c_.intermediate, Q = int64_t(c_.heads) * c_.headDim,
                  KV = int64_t(c_.kvHeads) * c_.headDim, V = c_.vocab;
    embed_ = find("model.embed_tokens.weight", {V, H});
    norm_ = findNorm("model.norm.weight", H);
    if (!c_.tieWordEmbeddings) lmHead_ = find("lm_head.weight", {V, H});
    layers_.resize(c_.layers);
    for (int l = 0; l < c_.layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LayerWeights& L = layers_[l];
      L.inNorm = findNorm(p + "input_layernorm.weight", H);
      L.postNorm = findNorm(p + "post_attention_layernorm.weight", H);
      if (c_.sandwichNorm) {
        L.preFfNorm = findNorm(p + "pre_feedforward_layernorm.weight", H);
        L.postFfNorm = findNorm(p + "post_feedforward_layernorm.weight", H);
      }
      if (c_.qkNorm) {
        L.qNorm = findNorm(p + "self_attn.q_norm.weight", c_.headDim);
        L.kNorm = findNorm(p + "self_attn.k_norm.weight", c_.headDim);
      }
      L.w[kQ] = find(p + "self_attn.q_proj.weight", {Q, H});
      L.w[kK] = find(p + "self_attn.k_proj.weight", {KV, H});
      L.w[kV] = find(p + "self_attn.v_proj.weight", {KV, H});
      L.w[kO] = find(p + "self_attn.o_proj.weight", {H, Q});
      if (c_.moeLayer[l]) {
        const int64_t E = c_.numExperts, M = c_.moeIntermediate;
        L.moe = true;
        L.router = find(p + "mlp.gate.weight", {E, H});
        L.experts.resize(E);
        for (int64_t e = 0; e < E; e++) {
          const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
          L.experts[e][0] = find(q + "gate_proj.weight", {M, H});
          L.experts[e][1] = find(q + "up_proj.weight", {M, H});
          L.experts[e][2] = find(q + "down_proj.weight", {H, M});
        }
        if (c_.sharedExpertIntermediate > 0) {
          const int64_t S = c_.sharedExpertIntermediate;
          L.w[kGate] = find(p + "mlp.shared_expert.gate_proj.weight", {S, H});
          L.w[kUp] = find(p + "mlp.shared_expert.up_proj.weight", {S, H});
          L.w[kDown] = find(p + "mlp.shared_expert.down_proj.weight", {H, S});
          L.sharedGate = find(p + "mlp.shared_expert_gate.weight", {1, H});
        }
      } else {
        L.w[kGate] = find(p + "mlp.gate_proj.weight", {I, H});
        L.w[kUp] = find(p + "mlp.up_proj.weight", {I, H});
        L.w[kDown] = find(p + "mlp.down_proj.weight", {H, I});
      }
      if (c_.attentionBias) {
        L.bq = find(p + "self_attn.q_proj.bias", {Q});
        L.bk = find(p + "self_attn.k_proj.bias", {KV});
        L.bv = find(p + "self_attn.v_proj.bias", {KV});
      }
    }
    refs_.clear();
    const size_t perLayer = size_t(o_.numBlocks) * o_.blockSize * KV;
    kcache_.assign(size_t(c_.layers) * perLayer, 0.0f);
    vcache_.assign(size_t(c_.layers) * perLayer, 0.0f);
    loaded_ = true;
  }

  EngineInfo info() const override {
    EngineInfo i;
    i.device = "cpu";
    i.deviceName = "cpu (" + std::to_string(pool_.size()) + " threads)";
    i.numBlocks = o_.numBlocks;
    i.blockSize = o_.blockSize;
    i.maxAdapters = o_.maxAdapters;
    i.weightBytes = weightBytes_;
    return i;
  }


  void loadAdapter(int slot, const std::vector<LoraModuleSpec>& modules) override {
    if (slot < 0 || slot >= o_.maxAdapters) throw EngineError("adapter slot " + std::to_string(slot) + " out of range");
    // Read outside the lock: steps keep running while the files load.
    auto ad = std::make_shared<Adapter>();
    ad->layers.resize(c_.layers);
    ad->experts.resize(c_.layers);
    for (const auto& m : modules) {
      if (m.proj < 0 || m.proj >= kNumModules) throw EngineError("adapter module with an unknown projection");
      if (modelLevel(m.proj)) {
        if (m.layer != -1) throw EngineError(std::string(projName(m.proj)) + ": layer must be -1 (it is not in a decoder layer)");
      } else {
        if (m.layer < 0 || m.layer >= c_.layers) throw EngineError("adapter module for layer " + std::to_string(m.layer) + ", the model has " + std::to_string(c_.layers));
        const std::string here = "layers." + std::to_string(m.layer) + "." + projName(m.proj);
        if (expertLevel(m.proj) && !c_.moeLayer[m.layer]) throw EngineError(here + ": this layer has no experts");
        if (c_.moeLayer[m.layer] && m.proj >= kGate && m.proj <= kDown && c_.sharedExpertIntermediate <= 0)
          throw EngineError(here + ": this layer's MLP is a mixture of experts, it has no " + projName(m.proj));
      }
      int in, out;
      projDimsAt(c_, m.layer, m.proj, in, out);
      const std::string where = modelLevel(m.proj) ? std::string(projName(m.proj)) : "layers." + std::to_string(m.layer) + "." + projName(m.proj);
      if (m.rank <= 0) throw EngineError(where + ": rank must be > 0");
      if (expertLevel(m.proj)) {
        const int64_t E = c_.numExperts, R = int64_t(m.rank) * E;
        if (m.a.shape != std::vector<int64_t>{R, in} || m.b.shape != std::vector<int64_t>{out, R})
          throw EngineError(where + ": lora_A/lora_B shapes do not fit the base model's experts");
        ExpertLora& x = ad->experts[m.layer][m.proj == kExpertGateUp ? 0 : 1];
        if (x.rank) throw EngineError(where + ": given twice");
        x.rank = m.rank;
        x.scale = m.scale;
        x.a = readTensorF32(m.a);
        const std::vector<float> b = readTensorF32(m.b);
        x.b.resize(b.size());
        for (int64_t e = 0; e < E; e++)
          for (int64_t o = 0; o < out; o++)
            for (int64_t k = 0; k < m.rank; k++) x.b[(e * out + o) * m.rank + k] = b[o * R + k * E + e];
        continue;
      }
      if (m.a.shape != std::vector<int64_t>{m.rank, in} || m.b.shape != std::vector<int64_t>{out, m.rank})
        throw EngineError(where + ": lora_A/lora_B shapes do not fit the base model");
      LoraWeights& w = m.proj == kEmbedTokens ? ad->embed : m.proj == kLmHead ? ad->head : ad->layers[m.layer][m.proj];
      if (w.rank) throw EngineError(where + ": given twice");
      w.rank = m.rank;
      w.scale = m.scale;
      w.a = readTensorF32(m.a);
      w.b = readTensorF32(m.b);
    }
    std::lock_guard<std::mutex> lock(mu_);
    slots_[slot] = std::move(ad);
  }

  void unloadAdapter(int slot) override {
    if (slot < 0 || slot >= o_.maxAdapters) throw EngineError("adapter slot " + std::to_string(slot) + " out of range");
    std::lock_guard<std::mutex> lock(mu_);
    slots_[slot].reset();
  }

  std::vector<SeqOutput> step(const std::vector<SeqInput>& batch) override;

 private:
  // y[t][o] = x[t] . W[o] (+ bias[o]) for t < T, split over output rows.
  void linear(const float* x, int T, int in, const std::vector<float>& W, int out, float* y,
              const std::vector<float>* bias = nullptr) {
    const float* w = W.data();
    const float* b = bias && !bias->empty() ? bias->data() : nullptr;
    pool_.parallelFor(out, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) {
        const float* wr = w + o * in;
        for (int t = 0; t < T; t++) {
          float v = dot(x + int64_t(t) * in, wr, in);
          y[int64_t(t) * out + o] = b ? v + b[o] : v;
        }
      }
    });
  }

  // Adds scale * B(A x) for every sequence whose adapter targets (layer, proj): rows of
  // other sequences are untouched, so adapters never leak across a batch.
  void applyLora(const std::vector<const Adapter*>& seqAdapter, const std::vector<int>& rowStart,
                 int layer, int proj, const float* x, float* y) {
    int in, out;
    projDimsAt(c_, layer, proj, in, out);
    std::vector<float> tmp;
    for (size_t s = 0; s < seqAdapter.size(); s++) {
      const Adapter* ad = seqAdapter[s];
      if (!ad) continue;
      const LoraWeights& w = ad->layers[layer][proj];
      if (!w.rank) continue;
      const int r0 = rowStart[s], n = rowStart[s + 1] - rowStart[s];
      tmp.assign(size_t(n) * w.rank, 0.0f);
      for (int t = 0; t < n; t++)
        for (int k = 0; k < w.rank; k++)
          tmp[size_t(t) * w.rank + k] = dot(x + int64_t(r0 + t) * in, w.a.data() + int64_t(k) * in, in);
      pool_.parallelFor(out, [&](int64_t o0, int64_t o1) {
        for (int t = 0; t < n; t++)
          for (int64_t o = o0; o < o1; o++)
            y[int64_t(r0 + t) * out + o] += dot(tmp.data() + size_t(t) * w.rank, w.b.data() + o * w.rank, w.rank) * w.scale;
      });
    }
  }

  // PEFT's Embedding LoRA for one token: x += (A[:, token] . B[i]) * scale * embedScale, in that order
  // (peft/tuners/lora/layer.py Embedding.forward: (after_A @ B^T) * scaling, then * the base layer's embed_scale).
  void addEmbedLora(const LoraWeights& w, int token, float* x) const {
    std::vector<float> col(w.rank);
    for (int k = 0; k < w.rank; k++) col[k] = w.a[size_t(k) * c_.vocab + token];
    for (int i = 0; i < c_.hidden; i++) {
      float d = dot(col.data(), w.b.data() + size_t(i) * w.rank, w.rank) * w.scale;
      if (c_.embedScale != 1.0f) d *= c_.embedScale;
      x[i] += d;
    }
  }

  // lm_head LoRA for one logit row: logits += scale * B(A h), h the final normed hidden state.
  void addHeadLora(const LoraWeights& w, const float* h, float* logits) {
    std::vector<float> t(w.rank);
    for (int k = 0; k < w.rank; k++) t[k] = dot(h, w.a.data() + size_t(k) * c_.hidden, c_.hidden);
    pool_.parallelFor(c_.vocab, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; o++) logits[o] += dot(t.data(), w.b.data() + o * w.rank, w.rank) * w.scale;
    });
  }

  void rmsNorm(const float* x, int T, const std::vector<float>& w, float* y) const { rmsNorm(x, T, c_.hidden, w, y); }

  // Expert e's LoRA (gate_up or down) for the n gathered rows xe of one expert: ye[i] += scale * B_e A_e xe[i]
  // for each row whose sequence's adapter has one (PEFT: the expert's weight plus scale * B_e A_e).
  void addExpertLora(const std::vector<const ExpertLora*>& rowLora, int e, const float* xe, int n, int in, int out, float* ye) {
    std::vector<float> t;
    for (int i = 0; i < n; i++) {
      const ExpertLora* w = rowLora[i];
      if (!w) continue;
      const int r = w->rank;
      t.assign(r, 0.0f);
      const float* a = w->a.data() + size_t(e) * r * in;
      const float* b = w->b.data() + size_t(e) * out * r;
      for (int k = 0; k < r; k++) t[k] = dot(xe + size_t(i) * in, a + size_t(k) * in, in);
      for (int o = 0; o < out; o++) ye[size_t(i) * out + o] += dot(t.data(), b + size_t(o) * r, r) * w->scale;
    }
  }

  // out[T][H] = sum over each row's chosen experts of weight * expert(h), as transformers' MoE blocks
  // (Qwen3-MoE, Mixtral, Qwen2-MoE): softmax of the router logits in fp32, top-k, optionally renormalised,
  // experts added in ascending expert order; Qwen2-MoE then adds sigmoid(shared_expert_gate h) times its
  // shared expert. Rows are computed one by one, so batching never changes them.
  void moeMlp(const LayerWeights& L, int layer, const float* h, int T, float* out,
              const std::vector<const Adapter*>& seqAdapter, const std::vector<int>& rowStart) {
    const int H = c_.hidden, E = c_.numExperts, K = c_.expertsPerToken, M = c_.moeIntermediate;
    std::vector<float> logits(size_t(T) * E);
    linear(h, T, H, L.router, E, logits.data());
    std::vector<std::vector<std::pair<int, float>>> rowsOf(E);  // expert -> (row, weight)
    std::vector<int> order(E);
    for (int t = 0; t < T; t++) {
      const float* lg = &logits[size_t(t) * E];
      const float mx = *std::max_element(lg, lg + E);
      std::vector<float> p(E);
      float sum = 0;
      for (int e = 0; e < E; e++) sum += (p[e] = std::exp(lg[e] - mx));
      for (int e = 0; e < E; e++) p[e] /= sum;
      for (int e = 0; e < E; e++) order[e] = e;
      // Largest first; among equal probabilities the lower index, as torch.topk returns them.
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      float chosen = 0;
      for (int k = 0; k < K; k++) chosen += p[order[k]];
      for (int k = 0; k < K; k++) rowsOf[order[k]].push_back({t, c_.normTopkProb ? p[order[k]] / chosen : p[order[k]]});
    }
    std::fill(out, out + size_t(T) * H, 0.0f);
    // Each row's expert LoRA (gate_up, down), from its sequence's adapter.
    std::array<std::vector<const ExpertLora*>, 2> loraOfRow;
    bool anyLora = false;
    for (int j = 0; j < 2; j++) {
      loraOfRow[j].assign(T, nullptr);
      for (size_t s = 0; s < seqAdapter.size(); s++) {
        const Adapter* ad = seqAdapter[s];
        if (!ad || !ad->experts[layer][j].rank) continue;
        for (int r = rowStart[s]; r < rowStart[s + 1]; r++) loraOfRow[j][r] = &ad->experts[layer][j];
        anyLora = true;
      }
    }
    std::vector<float> xe, ge, ue, ye, gu;
    std::array<std::vector<const ExpertLora*>, 2> rowLora;
    for (int e = 0; e < E; e++) {
      const auto& rows = rowsOf[e];
      if (rows.empty()) continue;
      const int n = int(rows.size());
      xe.resize(size_t(n) * H), ge.resize(size_t(n) * M), ue.resize(size_t(n) * M), ye.resize(size_t(n) * H);
      for (int i = 0; i < n; i++) std::memcpy(&xe[size_t(i) * H], h + size_t(rows[i].first) * H, sizeof(float) * H);
      linear(xe.data(), n, H, L.experts[e][0], M, ge.data());
      linear(xe.data(), n, H, L.experts[e][1], M, ue.data());
      if (anyLora) {
        for (int j = 0; j < 2; j++) {
          rowLora[j].resize(n);
          for (int i = 0; i < n; i++) rowLora[j][i] = loraOfRow[j][rows[i].first];
        }
        // gate_up's LoRA output is [gate | up] (PEFT's chunk(2) of the fused projection).
        gu.assign(size_t(n) * 2 * M, 0.0f);
        addExpertLora(rowLora[0], e, xe.data(), n, H, 2 * M, gu.data());
        for (int i = 0; i < n; i++)
          for (int k = 0; k < M; k++) {
            ge[size_t(i) * M + k] += gu[size_t(i) * 2 * M + k];
            ue[size_t(i) * M + k] += gu[size_t(i) * 2 * M + M + k];
          }
      }
      for (size_t i = 0; i < ge.size(); i++) ge[i] = ge[i] / (1.0f + std::exp(-ge[i])) * ue[i];
      linear(ge.data(), n, M, L.experts[e][2], H, ye.data());
      if (anyLora) addExpertLora(rowLora[1], e, ge.data(), n, M, H, ye.data());
      for (int i = 0; i < n; i++) {
        float* o = out + size_t(rows[i].first) * H;
        for (int j = 0; j < H; j++) o[j] += ye[size_t(i) * H + j] * rows[i].second;
      }
    }
    if (c_.sharedExpertIntermediate <= 0) return;
    // Qwen2-MoE's shared expert, a plain MLP (with its LoRA, if any, in the gate/up/down slots).
    const int S = c_.sharedExpertIntermediate;
    std::vector<float> g(size_t(T) * S), u(size_t(T) * S), y(size_t(T) * H), gate(T);
    linear(h, T, H, L.w[kGate], S, g.data());
    linear(h, T, H, L.w[kUp], S, u.data());
    applyLora(seqAdapter, rowStart, layer, kGate, h, g.data());
    applyLora(seqAdapter, rowStart, layer, kUp, h, u.data());
    for (size_t i = 0; i < g.size(); i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    linear(g.data(), T, S, L.w[kDown], H, y.data());
    applyLora(seqAdapter, rowStart, layer, kDown, g.data(), y.data());
    linear(h, T, H, L.sharedGate, 1, gate.data());
    for (int t = 0; t < T; t++) {
      const float sg = 1.0f / (1.0f + std::exp(-gate[t]));
      for (int j = 0; j < H; j++) out[size_t(t) * H + j] += sg * y[size_t(t) * H + j];
    }
  }

  void rmsNorm(const float* x, int T, int H, const std::vector<float>& w, float* y) const {
    for (int t = 0; t < T; t++) {
      const float* xr = x + int64_t(t) * H;
      float* yr = y + int64_t(t) * H;
      const float ms = dot(xr, xr, H) / H;
      const float inv = 1.0f / std::sqrt(ms + c_.rmsNormEps);
      for (int i = 0; i < H; i++) yr[i] = w[i] * (xr[i] * inv);
    }
  }

  ModelConfig c_;
  std::vector<TensorRef> refs_;
  EngineOptions o_;
  ThreadPool pool_;
  std::vector<float> invFreq_, invFreqLocal_;
  std::vector<float> embed_, norm_, lmHead_;
  std::vector<LayerWeights> layers_;
  std::vector<float> kcache_, vcache_;
  std::vector<std::shared_ptr<Adapter>> slots_;
  std::mutex mu_;       // guards slots_
  std::mutex stepMu_;   // one step at a time
  int64_t weightBytes_ = 0;
  bool loaded_ = false;
};

std::vector<SeqOutput> CpuEngine::step(const std::vector<SeqInput>& batch) {
  std::lock_guard<std::mutex> stepLock(stepMu_);
  if (!loaded_) throw EngineError("engine is not loaded");
  std::vector<std::shared_ptr<Adapter>> held;  // keeps adapters alive for the whole step
  std::vector<const Adapter*> seqAdapter(batch.size(), nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<bool> loaded(slots_.size());
    for (size_t i = 0; i < slots_.size(); i++) loaded[i] = slots_[i] != nullptr;
    validateBatch(batch, c_, o_, loaded);
    for (size_t s = 0; s < batch.size(); s++) {
      if (batch[s].adapterSlot < 0) continue;
      held.push_back(slots_[batch[s].adapterSlot]);
      seqAdapter[s] = held.back().get();
    }
  }
  const int H = c_.hidden, I = c_.intermediate, D = c_.headDim, NH = c_.heads, NKV = c_.kvHeads;
  const int Q = NH * D, KV = NKV * D, V = c_.vocab, BS = o_.blockSize;
  std::vector<int> rowStart(batch.size() + 1, 0);
  for (size_t s = 0; s < batch.size(); s++) rowStart[s + 1] = rowStart[s] + int(batch[s].tokens.size());
  const int T = rowStart.back();
  std::vector<int> rowSeq(T), rowPos(T);
  std::vector<float> x(size_t(T) * H);
  for (size_t s = 0; s < batch.size(); s++)
    for (int j = 0; j < int(batch[s].tokens.size()); j++) {
      const int r = rowStart[s] + j;
      rowSeq[r] = int(s);
      rowPos[r] = batch[s].position + j;
      std::memcpy(&x[size_t(r) * H], &embed_[size_t(batch[s].tokens[j]) * H], sizeof(float) * H);
      if (c_.embedScale != 1.0f)
        for (int i = 0; i < H; i++) x[size_t(r) * H + i] *= c_.embedScale;
      if (seqAdapter[s] && seqAdapter[s]->embed.rank) addEmbedLora(seqAdapter[s]->embed, batch[s].tokens[j], &x[size_t(r) * H]);
    }
  // Dynamic NTK and longrope: each sequence's frequencies follow its length once this step's tokens are in.
  std::vector<std::vector<float>> seqInvFreq;
  if (ropeDependsOnLength(c_))
    for (const auto& s : batch) seqInvFreq.push_back(ropeInvFreq(c_, int64_t(s.position) + int64_t(s.tokens.size())));
  const float ropeScale = static_cast<float>(c_.ropeAttentionFactor);
  std::vector<float> h(size_t(T) * H), q(size_t(T) * Q), k(size_t(T) * KV), v(size_t(T) * KV),
      att(size_t(T) * Q), tmpH(size_t(T) * H), g(size_t(T) * I), u(size_t(T) * I);
  const size_t perLayer = size_t(o_.numBlocks) * BS * KV;
  const float scale = c_.attnScale > 0 ? c_.attnScale : 1.0f / std::sqrt(float(D));
  const float softcap = c_.attnSoftcap;

  for (int l = 0; l < c_.layers; l++) {
    const LayerWeights& L = layers_[l];
    rmsNorm(x.data(), T, L.inNorm, h.data());
    linear(h.data(), T, H, L.w[kQ], Q, q.data(), &L.bq);
    linear(h.data(), T, H, L.w[kK], KV, k.data(), &L.bk);
    linear(h.data(), T, H, L.w[kV], KV, v.data(), &L.bv);
    applyLora(seqAdapter, rowStart, l, kQ, h.data(), q.data());
    applyLora(seqAdapter, rowStart, l, kK, h.data(), k.data());
    applyLora(seqAdapter, rowStart, l, kV, h.data(), v.data());
    if (c_.qkNorm) {
      rmsNorm(q.data(), T * NH, D, L.qNorm, q.data());
      rmsNorm(k.data(), T * NKV, D, L.kNorm, k.data());
    }
    // Gemma 3's sliding-window layers rotate with their own (plain) base.
    const bool local = c_.slidingWindow[l] > 0 && !invFreqLocal_.empty();
    for (int r = 0; r < T; r++) {
      const std::vector<float>& inv = local ? invFreqLocal_ : seqInvFreq.empty() ? invFreq_ : seqInvFreq[rowSeq[r]];
      const float rs = local ? 1.0f : ropeScale;
      for (int hd = 0; hd < NH; hd++) applyRope(&q[size_t(r) * Q + hd * D], D, rowPos[r], inv, rs);
      for (int hd = 0; hd < NKV; hd++) applyRope(&k[size_t(r) * KV + hd * D], D, rowPos[r], inv, rs);
    }
    float* kc = &kcache_[l * perLayer];
    float* vc = &vcache_[l * perLayer];
    auto slotOf = [&](const SeqInput& s, int pos) {
      return (size_t(s.blockTable[pos / BS]) * BS + pos % BS) * KV;
    };
    for (int r = 0; r < T; r++) {
      const size_t at = slotOf(batch[rowSeq[r]], rowPos[r]);
      std::memcpy(kc + at, &k[size_t(r) * KV], sizeof(float) * KV);
      std::memcpy(vc + at, &v[size_t(r) * KV], sizeof(float) * KV);
    }
    const int window = c_.slidingWindow[l];
    pool_.parallelFor(int64_t(T) * NH, [&](int64_t i0, int64_t i1) {
      std::vector<float> sc;
      for (int64_t i = i0; i < i1; i++) {
        const int r = int(i / NH), hd = int(i % NH), kvh = hd / (NH / NKV);
        const SeqInput& s = batch[rowSeq[r]];
        const int p = rowPos[r];
        const int lo = window > 0 ? std::max(0, p - window + 1) : 0;
        const float* qr = &q[size_t(r) * Q + hd * D];
        sc.resize(p - lo + 1);
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = lo; j <= p; j++) {
          float e = dot(qr, kc + slotOf(s, j) + kvh * D, D) * scale;
          if (softcap > 0) e = std::tanh(e / softcap) * softcap;
          sc[j - lo] = e;
          mx = std::max(mx, sc[j - lo]);
        }
        float sum = 0;
        for (auto& e : sc) sum += (e = std::exp(e - mx));
        float* out = &att[size_t(r) * Q + hd * D];
        std::fill(out, out + D, 0.0f);
        for (int j = lo; j <= p; j++) {
          const float w = sc[j - lo] / sum;
          const float* vr = vc + slotOf(s, j) + kvh * D;
          for (int d = 0; d < D; d++) out[d] += w * vr[d];
        }
      }
    });
    linear(att.data(), T, Q, L.w[kO], H, tmpH.data());
    applyLora(seqAdapter, rowStart, l, kO, att.data(), tmpH.data());
    // Gemma normalises each block's output before the residual add (post_attention / post_feedforward);
    // elsewhere post_attention_layernorm is the MLP's input norm.
    if (c_.sandwichNorm) rmsNorm(tmpH.data(), T, L.postNorm, tmpH.data());
    for (size_t i = 0; i < x.size(); i++) x[i] += tmpH[i];

    rmsNorm(x.data(), T, c_.sandwichNorm ? L.preFfNorm : L.postNorm, h.data());
    if (L.moe) {
      moeMlp(L, l, h.data(), T, tmpH.data(), seqAdapter, rowStart);
      for (size_t i = 0; i < x.size(); i++) x[i] += tmpH[i];
      continue;
    }
    linear(h.data(), T, H, L.w[kGate], I, g.data());
    linear(h.data(), T, H, L.w[kUp], I, u.data());
    applyLora(seqAdapter, rowStart, l, kGate, h.data(), g.data());
    applyLora(seqAdapter, rowStart, l, kUp, h.data(), u.data());
    if (c_.geluTanh) {
      // torch's gelu(approximate="tanh") in fp32.
      const float kBeta = float(M_SQRT2 * M_2_SQRTPI * 0.5), kKappa = 0.044715f;
      for (size_t i = 0; i < g.size(); i++) {
        const float a = g[i];
        g[i] = 0.5f * a * (1.0f + std::tanh(kBeta * (a + kKappa * a * a * a))) * u[i];
      }
    } else {
      for (size_t i = 0; i < g.size(); i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
    linear(g.data(), T, I, L.w[kDown], H, tmpH.data());
    applyLora(seqAdapter, rowStart, l, kDown, g.data(), tmpH.data());
    if (c_.sandwichNorm) rmsNorm(tmpH.data(), T, L.postFfNorm, tmpH.data());
    for (size_t i = 0; i < x.size(); i++) x[i] += tmpH[i];
  }

  // Logits only for rows someone asked about: every row for prompt logprobs, else the last.
  const std::vector<int> logitRows = logitRowsOf(batch, rowStart);
  std::vector<float> xr(logitRows.size() * size_t(H)), xn(logitRows.size() * size_t(H));
  for (size_t i = 0; i < logitRows.size(); i++)
    std::memcpy(&xr[i * H], &x[size_t(logitRows[i]) * H], sizeof(float) * H);
  rmsNorm(xr.data(), int(logitRows.size()), norm_, xn.data());
  std::vector<float> logits(logitRows.size() * size_t(V));
  linear(xn.data(), int(logitRows.size()), H, c_.tieWordEmbeddings ? embed_ : lmHead_, V, logits.data());
  // lm_head LoRA on the base head (tied or not), before soft-capping, for the rows of sequences that have one.
  for (size_t i = 0; i < logitRows.size(); i++) {
    const Adapter* ad = seqAdapter[rowSeq[logitRows[i]]];
    if (ad && ad->head.rank) addHeadLora(ad->head, &xn[i * H], &logits[i * V]);
  }
  if (c_.finalSoftcap > 0)
    for (auto& e : logits) e = std::tanh(e / c_.finalSoftcap) * c_.finalSoftcap;
  auto rowLogits = [&](int r) -> float* {
    const size_t i = std::lower_bound(logitRows.begin(), logitRows.end(), r) - logitRows.begin();
    return &logits[i * V];
  };

  std::vector<SeqOutput> outs(batch.size());
  for (size_t s = 0; s < batch.size(); s++)
    finishOnHost(batch[s], V, [&](int j) -> const float* { return rowLogits(rowStart[s] + j); }, outs[s]);
  return outs;
}

}  // namespace

std::unique_ptr<Engine> makeCpuEngine(ModelConfig config, std::vector<TensorRef> tensors,
                                      EngineOptions options) {
  return std::make_unique<CpuEngine>(std::move(config), std::move(tensors), options);
}

}  // namespace sb
