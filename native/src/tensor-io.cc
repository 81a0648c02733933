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

std::vector<float> readTensorF32(const TensorRef& t) {
  const int64_t n = t.numel();
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
