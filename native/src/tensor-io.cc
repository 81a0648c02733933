#include "tensor-io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace sb {

size_t dtypeSize(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

namespace {

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void readExact(int fd, char* dst, int64_t n, int64_t offset, const TensorRef& t) {
  int64_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, dst + done, static_cast<size_t>(n - done), offset + done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw EngineError("reading tensor " + t.name + " from " + t.file + ": " + std::strerror(errno));
    }
    if (r == 0) {
      throw EngineError("reading tensor " + t.name + " from " + t.file +
                        ": file is shorter than its header says (truncated?)");
    }
    done += r;
  }
}

}  // namespace

float e4m3ToF32(uint8_t b) {
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  const int e = (b >> 3) & 0xf, m = b & 7;
  if (e == 15 && m == 7) return std::nanf("");
  return sign * (e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + float(m) / 8.0f, e - 7));
}

std::vector<float> dequantPacked(const PackedWeight& w) {
  const int64_t G = w.groups();
  std::vector<float> out(size_t(w.out * w.in));
  for (int64_t o = 0; o < w.out; o++) {
    for (int64_t k = 0; k < w.in; k++) {
      float v;
      if (w.layout == PackedLayout::Q4) {
        v = w.lut[(w.codes[size_t((o * w.in + k) >> 1)] >> ((k & 1) * 4)) & 0xf];
      } else {
        const uint8_t c = w.codes[size_t(o * w.in + k)];
        v = w.codebook == PackedCodebook::U8 ? float(c) : w.codebook == PackedCodebook::S8 ? float(int8_t(c)) : e4m3ToF32(c);
      }
      const size_t g = size_t(o * G + k / w.groupSize);
      if (!w.zeros.empty()) v -= w.zeros[g];
      out[size_t(o * w.in + (w.perm.empty() ? k : w.perm[size_t(k)]))] = v * w.scales[g];
    }
  }
  return out;
}

std::vector<float> readTensorF32(const TensorRef& t) {
  const int64_t n = t.numel();
  if (t.packed) {
    if (t.packed->out * t.packed->in != n) throw EngineError("tensor " + t.name + ": packed weight does not fit its shape");
    return dequantPacked(*t.packed);
  }
  if (t.random) {
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) out[i] = randomWeight(t.randomSeed, static_cast<uint64_t>(i), t.randomStd);
    return out;
  }
  if (t.hasInline) {
    if (static_cast<int64_t>(t.inlineData.size()) != n) {
      throw EngineError("tensor " + t.name + ": inline data has " +
                        std::to_string(t.inlineData.size()) + " values, shape needs " +
                        std::to_string(n));
    }
    return t.inlineData;
  }
  const int64_t expected = n * static_cast<int64_t>(dtypeSize(t.dtype));
  if (t.nbytes != expected) {
    throw EngineError("tensor " + t.name + ": " + std::to_string(t.nbytes) +
                      " bytes for a shape that needs " + std::to_string(expected));
  }
  Fd f(::open(t.file.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw EngineError("opening " + t.file + ": " + std::strerror(errno));
  std::vector<float> out(static_cast<size_t>(n));
  if (t.dtype == DType::F32) {
    readExact(f.fd, reinterpret_cast<char*>(out.data()), expected, t.offset, t);
    return out;
  }
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  readExact(f.fd, reinterpret_cast<char*>(raw.data()), expected, t.offset, t);
  if (t.dtype == DType::BF16) {
    for (int64_t i = 0; i < n; i++) out[i] = bf16ToF32(raw[i]);
  } else {
    for (int64_t i = 0; i < n; i++) out[i] = f16ToF32(raw[i]);
  }
  return out;
}

}  // namespace sb
