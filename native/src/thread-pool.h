// A fixed pool of worker threads for splitting a loop over output rows. Every row is computed
// by the same code whatever the split, so results never depend on the thread count.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sb {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Calls fn(begin, end) over disjoint chunks of [0, n) and waits for all of them.
  void parallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);
  int size() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void run(int index);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t jobN_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace sb
