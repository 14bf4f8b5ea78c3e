// E-step statistics of the full-covariance Gaussian mixture on the CPU, as one fused
// kernel called through XLA's FFI (see native.py, which builds and registers it).
//
// For rows x_n (centred data), weights w_n and natural parameters eta (F, K), with the
// exponential-family features f(x) = [x_i x_j (i <= j), x, 1] (F = D (D + 1) / 2 + D + 1):
//
//   l_nk = f(x_n) . eta_k                              (E-step product)
//   r_nk = w_n exp(l_nk - max_k l_nk) / sum_k exp(l_nk - max_k l_nk)
//   packed[k, :] = sum_n r_nk f(x_n)                   (M-step statistics)
//   log_likelihood = sum_n w_n log sum_k exp(l_nk)
//
// XLA computes the same thing in blocks of rows (gaussmix.inference.em._scan_packed),
// but cannot fuse the features into the two matrix products: they are written to memory
// and read back twice, and the narrow (n x F) x (F x K) products run at about half the
// machine's matrix-product rate. Here each block of rows is small enough that its features
// stay in the core's L2 cache from their construction to the M-step product, both products
// are register-tiled for those shapes, and the exponentials are vectorized.
//
// Determinism: the rows are cut into a fixed number of chunks, each summed in order by one
// thread, and the chunks are added in order, so the result does not depend on the number
// of threads or their scheduling.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 32-byte vectors (AVX on x86-64; the compiler splits them where the target is narrower).
template <typename T>
struct Lanes;
template <>
struct Lanes<double> {
  typedef double Vector __attribute__((vector_size(32)));
  typedef int64_t Integers __attribute__((vector_size(32)));
  typedef uint64_t Unsigned __attribute__((vector_size(32)));
  static constexpr int count = 4;
  static constexpr int64_t shifter_bits = 0x4338000000000000LL;  // bits of 1.5 * 2^52
  static constexpr int mantissa_bits = 52;
  static constexpr int exponent_bias = 1023;
  static constexpr int exp_degree = 13;  // Taylor degree: truncation < 1e-17 on |r| <= ln(2)/2
  static constexpr double shifter = 0x1.8p52;
  static constexpr double exp_lowest = -708.0;  // exp below this is flushed to 0
};
template <>
struct Lanes<float> {
  typedef float Vector __attribute__((vector_size(32)));
  typedef int32_t Integers __attribute__((vector_size(32)));
  typedef uint32_t Unsigned __attribute__((vector_size(32)));
  static constexpr int count = 8;
  static constexpr int32_t shifter_bits = 0x4B400000;  // bits of 1.5 * 2^23
  static constexpr int mantissa_bits = 23;
  static constexpr int exponent_bias = 127;
  static constexpr int exp_degree = 7;  // truncation < 1e-8
  static constexpr float shifter = 0x1.8p23f;
  static constexpr float exp_lowest = -87.0f;
};

template <typename T>
using Vector = typename Lanes<T>::Vector;

inline Vector<double> broadcast(double value) { return Vector<double>{value, value, value, value}; }
inline Vector<float> broadcast(float value) {
  return Vector<float>{value, value, value, value, value, value, value, value};
}

template <typename T>
inline Vector<T> load(const T* address) {
  Vector<T> result;
  std::memcpy(&result, address, sizeof result);
  return result;
}

template <typename T>
inline void store(T* address, Vector<T> value) {
  std::memcpy(address, &value, sizeof value);
}

// Loads a value once into a register: without this GCC folds every use into its own
// memory operand, which doubles the loads of the E-step's inner loop.
template <typename V>
inline void keep_in_register(V& value) {
  asm("" : "+x"(value));
}

template <typename T>
inline T horizontal_sum(Vector<T> value) {
  T total = 0;
  for (int lane = 0; lane < Lanes<T>::count; ++lane) total += value[lane];
  return total;
}

// exp(x) for x <= 0, lane by lane: x = k ln 2 + r with |r| <= ln(2)/2 (ln 2 in two parts,
// the first exact in k ln 2), exp(r) by its Taylor polynomial, 2^k through the exponent bits.
// The polynomial by Horner's rule, or with short_chain by Estrin's scheme: the same
// coefficients, a dependency chain of 5 multiply-adds instead of 13 (the lane kernel has
// few independent rows in flight; 5-15 % faster there).
template <typename T, bool short_chain = false>
inline Vector<T> exponential(Vector<T> x) {
  using Integers = typename Lanes<T>::Integers;
  constexpr int degree = Lanes<T>::exp_degree;
  const Vector<T> lowest = broadcast(T(Lanes<T>::exp_lowest));
  const Vector<T> shifter = broadcast(T(Lanes<T>::shifter));
  const Vector<T> clamped = x < lowest ? lowest : x;
  const Vector<T> shifted = clamped * broadcast(T(1.4426950408889634)) + shifter;
  const Vector<T> k = shifted - shifter;
  const Vector<T> r = clamped - k * broadcast(T(0.693145751953125)) -
                      k * broadcast(T(1.4286068203094173e-06));
  Vector<T> polynomial;
  if constexpr (short_chain) {
    T coefficient[degree + 2] = {};  // 1 / i!, and a 0 that pads an odd count
    coefficient[0] = 1;
    for (int i = 1; i <= degree; ++i) coefficient[i] = coefficient[i - 1] / T(i);
    // pairs c_2i + c_2i+1 r, then pairs of pairs with r^2, r^4, r^8
    constexpr int n_pairs = (degree + 2) / 2;
    Vector<T> level[n_pairs];
    for (int i = 0; i < n_pairs; ++i) {
      level[i] = broadcast(coefficient[2 * i + 1]) * r + broadcast(coefficient[2 * i]);
    }
    Vector<T> power = r * r;
    int count = n_pairs;
    while (count > 1) {
      for (int i = 0; i < count / 2; ++i) level[i] = level[2 * i + 1] * power + level[2 * i];
      if (count % 2) level[count / 2] = level[count - 1];
      count = (count + 1) / 2;
      if (count > 1) power = power * power;
    }
    polynomial = level[0];
  } else {
    T coefficient = 1;  // 1 / degree!
    for (int i = 2; i <= degree; ++i) coefficient /= T(i);
    polynomial = broadcast(coefficient);
    for (int i = degree - 1; i >= 0; --i) {
      coefficient *= T(i + 1);  // 1 / i!
      polynomial = polynomial * r + broadcast(coefficient);
    }
  }
  Integers bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  const Integers scale_bits = (bits - Lanes<T>::shifter_bits + Lanes<T>::exponent_bias)
                              << Lanes<T>::mantissa_bits;
  Vector<T> scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  const Vector<T> result = polynomial * scale;
  return x < lowest ? broadcast(T(0)) : result;
}

template <typename T>
struct Problem {
  const T* x;        // (n_rows, n_features), row-major
  const T* weight;   // (n_rows,)
  // the natural parameters of each tile of components (see for_each_tile) as a contiguous
  // (n_columns, width) panel, the panel of the tile from k0 at k0 * n_columns
  const T* natural_panels;
  int64_t n_rows, n_features, n_components, n_columns, block_rows;
};

// Per-thread scratch: one block's transposed rows, features and responsibilities.
template <typename T>
struct Scratch {
  std::vector<T> rows, weight, features, responsibilities;
  explicit Scratch(const Problem<T>& problem)
      : rows(problem.n_features * problem.block_rows),
        weight(problem.block_rows),
        features(problem.n_columns * problem.block_rows),
        responsibilities(problem.n_components * problem.block_rows) {}
};

// One block's rows, transposed to (n_features, block_rows), and their weights; rows past
// the end of the data are zero rows of zero weight.
template <typename T>
void load_rows(const Problem<T>& problem, Scratch<T>& scratch, int64_t first_row) {
  const int64_t b = problem.block_rows, d = problem.n_features;
  const int64_t rows_here = std::min(b, problem.n_rows - first_row);
  T* rows = scratch.rows.data();
  for (int64_t r = 0; r < rows_here; ++r) {
    const T* source = problem.x + (first_row + r) * d;
    for (int64_t i = 0; i < d; ++i) rows[i * b + r] = source[i];
    scratch.weight[r] = problem.weight[first_row + r];
  }
  for (int64_t r = rows_here; r < b; ++r) {
    for (int64_t i = 0; i < d; ++i) rows[i * b + r] = 0;
    scratch.weight[r] = 0;
  }
}

// Components are processed in tiles of kTile (the last tile takes the rest): a tile's
// 12 accumulators (kTile x 2 vectors) leave 4 of AVX2's 16 vector registers for the loads
// (tiles of 4 were 6 % slower).
constexpr int64_t kTile = 6;

// log_prob[k0 : k0 + width] for two vectors of rows from r: width x 2 accumulators. The
// first tile (build) computes the features of these rows from the transposed rows and
// stores them, (n_columns, block_rows) with feature c of row r at c * block_rows + r, in
// the order [x_i x_j (i <= j), x, 1]; the other tiles and the M-step read them back.
template <typename T, int width, bool build>
inline void expectation_tile(const Problem<T>& problem, Scratch<T>& scratch, int64_t k0,
                             int64_t r) {
  constexpr int L = Lanes<T>::count;
  const int64_t b = problem.block_rows, d = problem.n_features;
  Vector<T> total[width][2] = {};
  T* feature = scratch.features.data() + r;
  const T* eta = problem.natural_panels + k0 * problem.n_columns;
  auto accumulate = [&](Vector<T> f0, Vector<T> f1) {
    keep_in_register(f0);
    keep_in_register(f1);
    for (int t = 0; t < width; ++t) {
      const Vector<T> e = broadcast(eta[t]);
      total[t][0] += e * f0;
      total[t][1] += e * f1;
    }
    feature += b;
    eta += width;
  };
  if constexpr (build) {
    const T* rows = scratch.rows.data() + r;
    for (int64_t i = 0; i < d; ++i) {
      const Vector<T> x0 = load(rows + i * b), x1 = load(rows + i * b + L);
      for (int64_t j = i; j < d; ++j) {
        const Vector<T> f0 = x0 * load(rows + j * b), f1 = x1 * load(rows + j * b + L);
        store(feature, f0);
        store(feature + L, f1);
        accumulate(f0, f1);
      }
    }
    for (int64_t i = 0; i < d; ++i) {
      const Vector<T> f0 = load(rows + i * b), f1 = load(rows + i * b + L);
      store(feature, f0);
      store(feature + L, f1);
      accumulate(f0, f1);
    }
    const Vector<T> one = broadcast(T(1));
    store(feature, one);
    store(feature + L, one);
    accumulate(one, one);
  } else {
    for (int64_t c = 0; c < problem.n_columns; ++c) accumulate(load(feature), load(feature + L));
  }
  T* out = scratch.responsibilities.data() + k0 * b + r;
  for (int t = 0; t < width; ++t) {
    store(out + t * b, total[t][0]);
    store(out + t * b + L, total[t][1]);
  }
}

// packed[k0 : k0 + width, c : c + 2] += responsibilities features^T: width x 2 accumulators.
template <typename T, int width>
inline void maximization_tile(const Problem<T>& problem, const Scratch<T>& scratch, int64_t k0,
                              int64_t c, T* packed) {
  constexpr int L = Lanes<T>::count;
  const int64_t b = problem.block_rows, columns = problem.n_columns;
  const bool pair = c + 1 < columns;
  const T* f0 = scratch.features.data() + c * b;
  const T* f1 = pair ? f0 + b : f0;
  const T* q = scratch.responsibilities.data() + k0 * b;
  Vector<T> total[width][2] = {};
  for (int64_t r = 0; r < b; r += L) {
    Vector<T> x0 = load(f0 + r), x1 = load(f1 + r);
    keep_in_register(x0);
    keep_in_register(x1);
    for (int t = 0; t < width; ++t) {
      Vector<T> weight = load(q + t * b + r);
      keep_in_register(weight);
      total[t][0] += weight * x0;
      total[t][1] += weight * x1;
    }
  }
  for (int t = 0; t < width; ++t) {
    packed[(k0 + t) * columns + c] += horizontal_sum<T>(total[t][0]);
    if (pair) packed[(k0 + t) * columns + c + 1] += horizontal_sum<T>(total[t][1]);
  }
}

// Calls tile<width>(...) for the component tiles [0, 6), [6, 12), ..., the rest.
template <typename Tile>
inline void for_each_tile(int64_t n_components, Tile&& tile) {
  for (int64_t k0 = 0; k0 < n_components; k0 += kTile) {
    switch (std::min(kTile, n_components - k0)) {
      case 1: tile(std::integral_constant<int, 1>{}, k0); break;
      case 2: tile(std::integral_constant<int, 2>{}, k0); break;
      case 3: tile(std::integral_constant<int, 3>{}, k0); break;
      case 4: tile(std::integral_constant<int, 4>{}, k0); break;
      case 5: tile(std::integral_constant<int, 5>{}, k0); break;
      default: tile(std::integral_constant<int, 6>{}, k0); break;
    }
  }
}

// log_prob (n_components, block_rows) = natural^T features, into scratch.responsibilities;
// the first component tile builds the features.
template <typename T>
void expectation_product(const Problem<T>& problem, Scratch<T>& scratch) {
  constexpr int L = Lanes<T>::count;
  for_each_tile(problem.n_components, [&](auto width, int64_t k0) {
    for (int64_t r = 0; r < problem.block_rows; r += 2 * L) {
      if (k0 == 0) {
        expectation_tile<T, decltype(width)::value, true>(problem, scratch, k0, r);
      } else {
        expectation_tile<T, decltype(width)::value, false>(problem, scratch, k0, r);
      }
    }
  });
}

// log_prob -> weighted responsibilities in place; returns sum_n w_n log p(x_n).
template <typename T>
double softmax(const Problem<T>& problem, Scratch<T>& scratch) {
  constexpr int L = Lanes<T>::count;
  const int64_t b = problem.block_rows, k_all = problem.n_components;
  T* values = scratch.responsibilities.data();
  double log_likelihood = 0;
  for (int64_t r = 0; r < b; r += L) {
    Vector<T> largest = load(values + r);
    for (int64_t k = 1; k < k_all; ++k) {
      const Vector<T> value = load(values + k * b + r);
      largest = value > largest ? value : largest;
    }
    Vector<T> total{};
    for (int64_t k = 0; k < k_all; ++k) {
      const Vector<T> term = exponential<T>(load(values + k * b + r) - largest);
      store(values + k * b + r, term);
      total += term;
    }
    const Vector<T> weight = load(scratch.weight.data() + r);
    const Vector<T> scale = weight / total;
    for (int64_t k = 0; k < k_all; ++k) store(values + k * b + r, load(values + k * b + r) * scale);
    for (int lane = 0; lane < L; ++lane) {
      if (weight[lane] != 0) {
        log_likelihood +=
            double(weight[lane]) * (double(largest[lane]) + std::log(double(total[lane])));
      }
    }
  }
  return log_likelihood;
}

// packed (n_components, n_columns) += responsibilities features^T.
template <typename T>
void maximization_product(const Problem<T>& problem, const Scratch<T>& scratch, T* packed) {
  for_each_tile(problem.n_components, [&](auto width, int64_t k0) {
    for (int64_t c = 0; c < problem.n_columns; c += 2) {
      maximization_tile<T, decltype(width)::value>(problem, scratch, k0, c, packed);
    }
  });
}

// Runs task(index, scratch) for every index in [0, n_tasks) on the calling thread and
// up to n_threads - 1 of XLA's threads, each index whole in one thread (a result does not
// depend on the number of threads), and returns when every task is done. A thread makes
// its scratch (new_scratch(): a std::unique_ptr) before its first task. The state is
// shared with the scheduled threads and kept alive by them: one that starts after every
// task was taken touches only the counter and returns.
template <typename NewScratch, typename Task>
void share_tasks(ffi::ThreadPool& thread_pool, int64_t n_tasks, int64_t n_threads,
                 NewScratch new_scratch, Task task) {
  struct Shared {
    Shared(NewScratch new_scratch, Task task, int64_t n_tasks)
        : new_scratch(std::move(new_scratch)), task(std::move(task)), n_tasks(n_tasks) {}
    NewScratch new_scratch;
    Task task;
    int64_t n_tasks;
    std::atomic<int64_t> next{0};
    std::mutex mutex;
    std::condition_variable finished;
    int64_t done = 0;

    void run() {
      decltype(new_scratch()) scratch;
      int64_t mine = 0;
      for (int64_t index; (index = next.fetch_add(1)) < n_tasks; ++mine) {
        if (!scratch) scratch = new_scratch();
        task(index, *scratch);
      }
      if (mine == 0) return;
      std::lock_guard<std::mutex> lock(mutex);
      done += mine;
      if (done == n_tasks) finished.notify_all();
    }
  };
  if (n_tasks <= 0) return;
  auto shared = std::make_shared<Shared>(std::move(new_scratch), std::move(task), n_tasks);
  for (int64_t i = 1; i < std::min(n_threads, n_tasks); ++i) {
    thread_pool.Schedule([shared] { shared->run(); });
  }
  shared->run();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->finished.wait(lock, [&] { return shared->done == shared->n_tasks; });
}

// Rows are cut into this many chunks at most (fewer when there are fewer blocks): enough
// that threads starting late or running slower even out (16 threads get 4 chunks each);
// 16 chunks were 1-5 % slower on 2 cores.
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kFeatureCacheBytes = 288 * 1024;  // a block's features: in a 512 KiB L2

template <ffi::DataType dtype>
ffi::Error statistics(ffi::ThreadPool thread_pool, ffi::Buffer<dtype> x, ffi::Buffer<dtype> weight,
                      ffi::Buffer<dtype> natural, ffi::ResultBuffer<dtype> packed,
                      ffi::ResultBuffer<dtype> log_likelihood) {
  using T = ffi::NativeType<dtype>;
  constexpr int L = Lanes<T>::count;
  const auto x_shape = x.dimensions();
  const auto natural_shape = natural.dimensions();
  if (x_shape.size() != 2 || natural_shape.size() != 2 || weight.dimensions().size() != 1) {
    return ffi::Error::InvalidArgument("em_full_statistics: expected x (N, D), weight (N,), "
                                       "natural (F, K)");
  }
  const int64_t n_rows = x_shape[0], n_features = x_shape[1];
  const int64_t n_columns = natural_shape[0], n_components = natural_shape[1];
  if (weight.dimensions()[0] != n_rows ||
      n_columns != n_features * (n_features + 1) / 2 + n_features + 1) {
    return ffi::Error::InvalidArgument("em_full_statistics: inconsistent shapes");
  }
  const int64_t size = n_components * n_columns;
  T* packed_out = packed->typed_data();
  if (n_rows == 0) {
    std::fill(packed_out, packed_out + size, T(0));
    *log_likelihood->typed_data() = 0;
    return ffi::Error::Success();
  }
  const T* eta = natural.typed_data();
  std::vector<T> panels(size);
  for_each_tile(n_components, [&](auto width, int64_t k0) {
    for (int64_t c = 0; c < n_columns; ++c) {
      for (int64_t t = 0; t < width; ++t) {
        panels[k0 * n_columns + c * width + t] = eta[c * n_components + k0 + t];
      }
    }
  });
  // rows per block: a multiple of two vectors whose features fit the cache budget
  int64_t block_rows = kFeatureCacheBytes / (n_columns * int64_t(sizeof(T)));
  block_rows = std::clamp<int64_t>(block_rows / (2 * L) * (2 * L), 2 * L, 256);
  const int64_t n_blocks = (n_rows + block_rows - 1) / block_rows;

  const Problem<T> problem{x.typed_data(), weight.typed_data(), panels.data(),
                           n_rows, n_features, n_components, n_columns, block_rows};
  const int64_t n_chunks = std::min(kMaxChunks, n_blocks);
  const int64_t blocks_per_chunk_floor = n_blocks / n_chunks;
  const int64_t blocks_remainder = n_blocks % n_chunks;
  std::vector<T> chunks_packed(n_chunks * size, T(0));  // (n_chunks, n_components, n_columns)
  std::vector<double> chunks_log_likelihood(n_chunks, 0.0);
  share_tasks(
      thread_pool, n_chunks, thread_pool.num_threads(),
      [&problem] { return std::make_unique<Scratch<T>>(problem); },
      [&](int64_t chunk, Scratch<T>& scratch) {
        // chunk c holds blocks [first, last): the first `remainder` chunks one block more
        const int64_t first = chunk * blocks_per_chunk_floor + std::min(chunk, blocks_remainder);
        const int64_t last = first + blocks_per_chunk_floor + (chunk < blocks_remainder ? 1 : 0);
        T* chunk_packed = chunks_packed.data() + chunk * size;
        double chunk_log_likelihood = 0;
        for (int64_t block = first; block < last; ++block) {
          load_rows(problem, scratch, block * problem.block_rows);
          expectation_product(problem, scratch);
          chunk_log_likelihood += softmax(problem, scratch);
          maximization_product(problem, scratch, chunk_packed);
        }
        chunks_log_likelihood[chunk] = chunk_log_likelihood;
      });
  std::fill(packed_out, packed_out + size, T(0));
  double total = 0;
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const T* chunk_packed = chunks_packed.data() + chunk * size;
    for (int64_t i = 0; i < size; ++i) packed_out[i] += chunk_packed[i];
    total += chunks_log_likelihood[chunk];
  }
  *log_likelihood->typed_data() = T(total);
  return ffi::Error::Success();
}


// ---- Many small datasets side by side (gaussmix.inference.em.pool's lanes) -------------
//
// The same statistics, with unit weights, for each of B small datasets under its own
// natural parameters: x (B, D, n) with each dataset's rows on the minor axis (so a vector
// holds one feature of consecutive rows and is loaded straight from the input), natural
// (B, F, K), packed (B, K, F), log_likelihood (B,). The quadratic features follow the
// covariance layout: x_i x_j (i <= j) for "full" (0), x_i^2 for "diag" (1), sum_i x_i^2
// for "spherical" (2); then x and 1.
//
// One dataset is one pass over its rows, in one thread, vector of rows by vector of rows:
// the features, the K log-probabilities, the softmax and the K x F weighted sums stay in
// registers and L1 (a few hundred bytes), so nothing of size (K, n) is written. The
// log-likelihood sum_n log sum_k exp(l_nk) is sum_n max_k l_nk plus the log of the product
// of the normalizers sum_k exp(l_nk - max_k l_nk), each in [1, K], kept as a mantissa in
// [1, 2) and a sum of binary exponents (one log per vector lane instead of one per row).
// Datasets are shared among threads whole, each summed in a fixed order, so the result
// does not depend on the number of threads.

template <typename T>
struct LaneProblem {
  const T* x;
  const T* natural;
  T* packed;
  T* log_likelihood;
  int64_t n_features, n_rows, n_columns, n_components;
  int64_t layout;  // 0 full, 1 diag, 2 spherical
};

// One dataset's pass over its rows, K components known at compile time (so that the K
// log-probabilities, exponentials and responsibilities of a vector of rows stay in
// registers and the K exponentials' dependency chains interleave).
template <typename T, int K>
void lane_dataset(const LaneProblem<T>& problem, int64_t dataset, std::vector<Vector<T>>& scratch) {
  using Integers = typename Lanes<T>::Integers;
  using Unsigned = typename Lanes<T>::Unsigned;
  constexpr int L = Lanes<T>::count;
  const int64_t d = problem.n_features, n = problem.n_rows, f_all = problem.n_columns;
  const T* x = problem.x + dataset * d * n;
  const T* eta = problem.natural + dataset * f_all * K;
  Vector<T>* natural = scratch.data();        // (F, K), broadcast
  Vector<T>* total = natural + f_all * K;     // (K, F) accumulators
  Vector<T>* feature = total + K * f_all;     // (F,)
  Vector<T>* row = feature + f_all;           // (D,)
  for (int64_t i = 0; i < f_all * K; ++i) natural[i] = broadcast(eta[i]);
  for (int64_t i = 0; i < K * f_all; ++i) total[i] = Vector<T>{};
  const Vector<T> zero{}, one = broadcast(T(1));
  const Integers mantissa_mask = ((Integers{} + 1) << Lanes<T>::mantissa_bits) - 1;
  const Integers exponent_one = (Integers{} + Lanes<T>::exponent_bias) << Lanes<T>::mantissa_bits;
  Vector<T> largest_sum{}, mantissa = one;
  Integers exponent_sum{};
  for (int64_t r = 0; r < n; r += L) {
    const int64_t valid = std::min<int64_t>(L, n - r);
    Vector<T> weight = one;
    if (valid == L) {
      for (int64_t i = 0; i < d; ++i) row[i] = load(x + i * n + r);
    } else {  // the last rows: zero rows of weight 0 pad the vector
      for (int64_t i = 0; i < d; ++i) {
        row[i] = zero;
        std::memcpy(&row[i], x + i * n + r, valid * sizeof(T));
      }
      for (int lane = int(valid); lane < L; ++lane) weight[lane] = 0;
    }
    int64_t c = 0;
    if (problem.layout == 0) {
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = i; j < d; ++j) feature[c++] = row[i] * row[j];
    } else if (problem.layout == 1) {
      for (int64_t i = 0; i < d; ++i) feature[c++] = row[i] * row[i];
    } else {
      Vector<T> squares = row[0] * row[0];
      for (int64_t i = 1; i < d; ++i) squares += row[i] * row[i];
      feature[c++] = squares;
    }
    for (int64_t i = 0; i < d; ++i) feature[c++] = row[i];
    feature[c] = one;
    Vector<T> value[K] = {};  // log-probabilities, then exponentials
    for (int64_t f = 0; f < f_all; ++f) {
      const Vector<T> phi = feature[f];
#pragma GCC unroll 16
      for (int k = 0; k < K; ++k) value[k] += natural[f * K + k] * phi;
    }
    Vector<T> largest = value[0];
    for (int k = 1; k < K; ++k) largest = value[k] > largest ? value[k] : largest;
#pragma GCC unroll 16
    for (int k = 0; k < K; ++k) value[k] = exponential<T, true>(value[k] - largest);
    Vector<T> normalizer = value[0];
    for (int k = 1; k < K; ++k) normalizer += value[k];
    const Vector<T> scale = weight / normalizer;
    for (int k = 0; k < K; ++k) value[k] *= scale;  // responsibilities
    for (int64_t f = 0; f < f_all; ++f) {
      const Vector<T> phi = feature[f];
#pragma GCC unroll 16
      for (int k = 0; k < K; ++k) total[k * f_all + f] += value[k] * phi;
    }
    // normalizer - normalizer is NaN where the normalizer is not finite: kept in the sum
    largest_sum += weight > zero ? largest + (normalizer - normalizer) : zero;
    mantissa *= weight > zero ? normalizer : one;
    Integers bits;  // mantissa = m 2^e: e to the sum, m in [1, 2) kept
    std::memcpy(&bits, &mantissa, sizeof bits);
    // (a logical shift: AVX2 has no arithmetic shift of 64-bit lanes)
    exponent_sum += Integers(Unsigned(bits) >> Lanes<T>::mantissa_bits) - Lanes<T>::exponent_bias;
    bits = (bits & mantissa_mask) | exponent_one;
    std::memcpy(&mantissa, &bits, sizeof bits);
  }
  T* packed = problem.packed + dataset * K * f_all;
  for (int64_t i = 0; i < K * f_all; ++i) packed[i] = horizontal_sum<T>(total[i]);
  double log_likelihood = 0;
  for (int lane = 0; lane < L; ++lane) {
    log_likelihood += double(largest_sum[lane]) + std::log(double(mantissa[lane])) +
                      double(exponent_sum[lane]) * 0.6931471805599453;
  }
  problem.log_likelihood[dataset] = T(log_likelihood);
}

// The most components the lane kernel takes (gaussmix.inference.native.LANE_COMPONENTS).
constexpr int64_t kLaneComponents = 10;

template <typename T, int K = 1>
void lane_dataset_of(const LaneProblem<T>& problem, int64_t dataset,
                     std::vector<Vector<T>>& scratch) {
  if constexpr (K < kLaneComponents) {
    if (problem.n_components != K) return lane_dataset_of<T, K + 1>(problem, dataset, scratch);
  }
  lane_dataset<T, K>(problem, dataset, scratch);
}

// Datasets per thread at least before helper threads are asked (a task costs a few us).
constexpr int64_t kLaneDatasetsPerThread = 8;

template <ffi::DataType dtype>
ffi::Error lane_statistics(ffi::ThreadPool thread_pool, ffi::Buffer<dtype> x,
                           ffi::Buffer<dtype> natural, ffi::ResultBuffer<dtype> packed,
                           ffi::ResultBuffer<dtype> log_likelihood, int64_t layout) {
  using T = ffi::NativeType<dtype>;
  const auto x_shape = x.dimensions();
  const auto natural_shape = natural.dimensions();
  const int64_t rank = x_shape.size();
  if (rank < 2 || natural_shape.size() != x_shape.size() || layout < 0 || layout > 2) {
    return ffi::Error::InvalidArgument(
        "em_lane_statistics: expected x (..., D, n), natural (..., F, K), layout 0, 1 or 2");
  }
  int64_t n_datasets = 1;
  for (int64_t axis = 0; axis < rank - 2; ++axis) {
    if (x_shape[axis] != natural_shape[axis]) {
      return ffi::Error::InvalidArgument("em_lane_statistics: batch axes differ");
    }
    n_datasets *= x_shape[axis];
  }
  const int64_t n_features = x_shape[rank - 2], n_rows = x_shape[rank - 1];
  const int64_t n_columns = natural_shape[rank - 2], n_components = natural_shape[rank - 1];
  const int64_t n_quadratic =
      layout == 0 ? n_features * (n_features + 1) / 2 : (layout == 1 ? n_features : 1);
  if (n_features < 1 || n_components < 1 || n_components > kLaneComponents ||
      n_columns != n_quadratic + n_features + 1) {
    return ffi::Error::InvalidArgument("em_lane_statistics: inconsistent shapes");
  }
  if (n_datasets == 0) return ffi::Error::Success();
  const LaneProblem<T> problem{x.typed_data(), natural.typed_data(), packed->typed_data(),
                               log_likelihood->typed_data(), n_features, n_rows, n_columns,
                               n_components, layout};
  share_tasks(
      thread_pool, n_datasets,
      std::min<int64_t>(thread_pool.num_threads(), n_datasets / kLaneDatasetsPerThread),
      [&problem] {  // natural, total, feature, row (see lane_dataset)
        return std::make_unique<std::vector<Vector<T>>>(
            2 * problem.n_columns * problem.n_components + problem.n_columns +
            problem.n_features);
      },
      [&problem](int64_t dataset, std::vector<Vector<T>>& scratch) {
        lane_dataset_of(problem, dataset, scratch);
      });
  return ffi::Error::Success();
}

// ---- Whole EM fits of many small datasets (gaussmix.inference.em.pool.pool_fit) --------
//
// Each dataset fitted to the end in one thread: the E-step above (lane_dataset), then the
// maximum-likelihood M-step of the unconstrained models (full, diag, spherical: mclust's
// VVV, VVI, VII) as gaussmix.inference.em.maximization writes it, collapse detection and
// mclust's convergence test as pool_fit's XLA loop does, step after step, in registers and
// a few hundred bytes of scratch. No XLA loop, refill or thread-pool round trip per step:
// the datasets are shared among XLA's threads whole, so the result does not depend on the
// number of threads.
//
// Inputs: x (B, D, n) rows minor, centred at centre (B, D); the starts weights (B, K), means
// (B, K, D), precision factors (B, K, D, D) | (B, K, D) | (B, K) (scikit-learn's upper
// factor U, P = U U^T); mask (B,) int (fit where non-zero); rtol, reg_covar (). Outputs:
// weights, means, covariances, factors of the last M-step (means about the origin), the
// log-likelihood of the parameters that entered the last step, converged, collapsed and
// n_iter (B,); a dataset not fitted gets zeros, -inf and 0.

template <typename T>
struct FitProblem {
  const T *x, *centre, *weights, *means, *factor;
  const int32_t* mask;
  T rtol, reg_covar;
  T *out_weights, *out_means, *out_covariances, *out_factor, *out_log_likelihood;
  int32_t *out_converged, *out_collapsed, *out_n_iter;
  int64_t n_features, n_rows, n_columns, n_components, layout, max_iter, covariance_size;
};

// eta (F, K) of gaussmix.inference.em.features.natural_parameters (centre 0) from weights,
// centred means and precision factors; precision: (K, D, D) scratch for "full".
template <typename T>
void natural_of(const FitProblem<T>& p, const T* weights, const T* means, const T* factor,
                T* precision, T* eta) {
  const int64_t d = p.n_features, K = p.n_components;
  for (int64_t k = 0; k < K; ++k) {
    const T* m = means + k * d;
    T half_log_det = 0, quadratic_form = 0;
    int64_t c = 0;
    if (p.layout == 0) {
      const T* u = factor + k * d * d;
      T* prec = precision + k * d * d;
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j) {
          T sum = 0;
          for (int64_t l = 0; l < d; ++l) sum += u[i * d + l] * u[j * d + l];
          prec[i * d + j] = sum;
        }
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = i; j < d; ++j) {
          eta[(c++) * K + k] = prec[i * d + j] * T(i == j ? -0.5 : -1.0);
        }
      for (int64_t i = 0; i < d; ++i) {
        T linear = 0;
        for (int64_t j = 0; j < d; ++j) linear += prec[i * d + j] * m[j];
        eta[(c++) * K + k] = linear;
        quadratic_form += m[i] * linear;
        half_log_det += std::log(u[i * d + i]);
      }
    } else if (p.layout == 1) {
      const T* u = factor + k * d;
      for (int64_t i = 0; i < d; ++i) eta[(c++) * K + k] = T(-0.5) * (u[i] * u[i]);
      for (int64_t i = 0; i < d; ++i) {
        const T linear = (u[i] * u[i]) * m[i];
        eta[(c++) * K + k] = linear;
        quadratic_form += m[i] * linear;
        half_log_det += std::log(u[i]);
      }
    } else {
      const T precision_k = factor[k] * factor[k];
      eta[(c++) * K + k] = T(-0.5) * precision_k;
      for (int64_t i = 0; i < d; ++i) {
        const T linear = precision_k * m[i];
        eta[(c++) * K + k] = linear;
        quadratic_form += m[i] * linear;
      }
      half_log_det = T(d) * std::log(factor[k]);
    }
    eta[c * K + k] = std::log(weights[k]) - T(0.5) * quadratic_form + half_log_det -
                     T(0.5) * T(d) * T(1.8378770664093453);  // log(2 pi)
  }
}

// The M-step from packed (K, F) sums: weights, centred means, covariances and factors
// (NaN factors where a covariance is not positive definite); whether a component collapsed.
template <typename T>
bool maximize_of(const FitProblem<T>& p, const T* packed, T* weights, T* means, T* covariances,
                 T* factor) {
  const int64_t d = p.n_features, K = p.n_components, F = p.n_columns;
  const int64_t n_quadratic = F - d - 1;
  const T tiny = T(10) * std::numeric_limits<T>::epsilon();
  T total = 0;
  for (int64_t k = 0; k < K; ++k) total += packed[k * F + F - 1] + tiny;
  bool collapsed = false;
  for (int64_t k = 0; k < K; ++k) {
    const T* s = packed + k * F;
    const T count = s[F - 1], regularized = count + tiny;
    weights[k] = regularized / total;
    T* m = means + k * d;
    for (int64_t i = 0; i < d; ++i) m[i] = s[n_quadratic + i] / regularized;
    if (p.layout == 0) {
      T* cov = covariances + k * d * d;
      int64_t c = 0;
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = i; j < d; ++j, ++c) {
          const T first_i = s[n_quadratic + i], first_j = s[n_quadratic + j];
          const T scatter = s[c] - first_i * m[j] - m[i] * first_j + count * m[i] * m[j];
          cov[i * d + j] = cov[j * d + i] = scatter / regularized + (i == j ? p.reg_covar : T(0));
        }
      // Cholesky L L^T = cov, then U = L^{-T} by forward substitution (NaN if not PD)
      T* u = factor + k * d * d;
      T lower[64];
      bool positive = true;
      for (int64_t i = 0; i < d && positive; ++i)
        for (int64_t j = 0; j <= i; ++j) {
          T sum = cov[i * d + j];
          for (int64_t l = 0; l < j; ++l) sum -= lower[i * d + l] * lower[j * d + l];
          if (i == j) {
            if (!(sum > 0)) {
              positive = false;
              break;
            }
            lower[i * d + i] = std::sqrt(sum);
          } else {
            lower[i * d + j] = sum / lower[j * d + j];
          }
        }
      if (!positive) {
        for (int64_t i = 0; i < d * d; ++i) u[i] = std::numeric_limits<T>::quiet_NaN();
        collapsed = true;
        continue;
      }
      T inverse[64];  // L^{-1}, lower
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j) {
          if (j > i) {
            inverse[i * d + j] = 0;
            continue;
          }
          T sum = i == j ? T(1) : T(0);
          for (int64_t l = j; l < i; ++l) sum -= lower[i * d + l] * inverse[l * d + j];
          inverse[i * d + j] = sum / lower[i * d + i];
        }
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < d; ++j) u[i * d + j] = inverse[j * d + i];
      for (int64_t i = 0; i < d; ++i) {
        if (!(u[i * d + i] > 0) || !std::isfinite(u[i * d + i])) collapsed = true;
      }
    } else if (p.layout == 1) {
      T* cov = covariances + k * d;
      T* u = factor + k * d;
      for (int64_t i = 0; i < d; ++i) {
        cov[i] = s[i] / regularized - m[i] * m[i] + p.reg_covar;
        u[i] = T(1) / std::sqrt(cov[i]);
        if (!std::isfinite(u[i]) || !(cov[i] > 0)) collapsed = true;
      }
    } else {
      T squares = 0;
      for (int64_t i = 0; i < d; ++i) squares += m[i] * m[i];
      covariances[k] = (s[0] / regularized - squares) / T(d) + p.reg_covar;
      factor[k] = T(1) / std::sqrt(covariances[k]);
      if (!std::isfinite(factor[k]) || !(covariances[k] > 0)) collapsed = true;
    }
  }
  return collapsed;
}

// Scratch of one thread: (K, D) means, covariances and factors twice (current, new), eta
// (F, K), packed (K, F), (K, D, D) precisions, and the lane kernel's vectors.
template <typename T>
struct FitScratch {
  std::vector<T> weights, means, factor, eta, packed, precision;
  std::vector<Vector<T>> lanes;
  explicit FitScratch(const FitProblem<T>& p)
      : weights(p.n_components),
        means(p.n_components * p.n_features),
        factor(p.n_components * p.covariance_size),
        eta(p.n_columns * p.n_components),
        packed(p.n_components * p.n_columns),
        precision(p.n_components * p.n_features * p.n_features),
        lanes(2 * p.n_columns * p.n_components + p.n_columns + p.n_features) {}
};

template <typename T, int K>
void fit_dataset(const FitProblem<T>& p, int64_t dataset, FitScratch<T>& s) {
  const int64_t d = p.n_features, n = p.n_rows, F = p.n_columns, size = p.covariance_size;
  T* out_weights = p.out_weights + dataset * K;
  T* out_means = p.out_means + dataset * K * d;
  T* out_covariances = p.out_covariances + dataset * K * size;
  T* out_factor = p.out_factor + dataset * K * size;
  if (!p.mask[dataset]) {
    std::fill(out_weights, out_weights + K, T(0));
    std::fill(out_means, out_means + K * d, T(0));
    std::fill(out_covariances, out_covariances + K * size, T(0));
    std::fill(out_factor, out_factor + K * size, T(0));
    p.out_log_likelihood[dataset] = -std::numeric_limits<T>::infinity();
    p.out_converged[dataset] = p.out_collapsed[dataset] = p.out_n_iter[dataset] = 0;
    return;
  }
  const T* centre = p.centre + dataset * d;
  T* weights = s.weights.data();
  T* means = s.means.data();
  T* factor = s.factor.data();
  std::copy(p.weights + dataset * K, p.weights + (dataset + 1) * K, weights);
  std::copy(p.factor + dataset * K * size, p.factor + (dataset + 1) * K * size, factor);
  for (int64_t k = 0; k < K; ++k) {  // the means about the dataset's centre, as its rows
    for (int64_t i = 0; i < d; ++i) {
      means[k * d + i] = p.means[(dataset * K + k) * d + i] - centre[i];
    }
  }
  T log_likelihood = 0;
  LaneProblem<T> lane{p.x + dataset * d * n, s.eta.data(), s.packed.data(), &log_likelihood,
                      d, n, F, K, p.layout};
  T previous = -std::numeric_limits<T>::infinity();
  int32_t n_iter = 0;
  while (true) {
    natural_of(p, weights, means, factor, s.precision.data(), s.eta.data());
    lane_dataset<T, K>(lane, 0, s.lanes);
    const T bound = log_likelihood / T(n);
    const bool collapsed =
        maximize_of(p, s.packed.data(), out_weights, out_means, out_covariances, out_factor);
    // mclust's |L_t - L_{t-1}| < rtol (1 + |L_t|) on totals, here on means (as pool_fit)
    const T magnitude = std::isfinite(previous) ? std::abs(previous) : T(0);
    const T tolerance = p.rtol * (T(1) / T(n) + magnitude);
    const bool converged = std::abs(bound - previous) < tolerance;
    ++n_iter;
    if (converged || collapsed || n_iter >= p.max_iter) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < d; ++i) out_means[k * d + i] += centre[i];
      p.out_log_likelihood[dataset] = bound * T(n);
      p.out_converged[dataset] = converged;
      p.out_collapsed[dataset] = collapsed;
      p.out_n_iter[dataset] = n_iter;
      return;
    }
    previous = bound;
    std::copy(out_weights, out_weights + K, weights);
    std::copy(out_means, out_means + K * d, means);
    std::copy(out_factor, out_factor + K * size, factor);
  }
}

template <typename T, int K = 1>
void fit_dataset_of(const FitProblem<T>& p, int64_t dataset, FitScratch<T>& s) {
  if constexpr (K < kLaneComponents) {
    if (p.n_components != K) return fit_dataset_of<T, K + 1>(p, dataset, s);
  }
  fit_dataset<T, K>(p, dataset, s);
}

// The most features of a "full" fit (its Cholesky factors live in 64-element arrays).
constexpr int64_t kFitFeatures = 8;

template <ffi::DataType dtype>
ffi::Error pool_fit(ffi::ThreadPool thread_pool, ffi::Buffer<dtype> x, ffi::Buffer<dtype> centre,
                    ffi::Buffer<dtype> weights, ffi::Buffer<dtype> means,
                    ffi::Buffer<dtype> factor, ffi::Buffer<ffi::S32> mask,
                    ffi::Buffer<dtype> rtol, ffi::Buffer<dtype> reg_covar,
                    ffi::ResultBuffer<dtype> out_weights, ffi::ResultBuffer<dtype> out_means,
                    ffi::ResultBuffer<dtype> out_covariances, ffi::ResultBuffer<dtype> out_factor,
                    ffi::ResultBuffer<dtype> out_log_likelihood,
                    ffi::ResultBuffer<ffi::S32> out_converged,
                    ffi::ResultBuffer<ffi::S32> out_collapsed,
                    ffi::ResultBuffer<ffi::S32> out_n_iter, int64_t layout, int64_t max_iter) {
  using T = ffi::NativeType<dtype>;
  const auto x_shape = x.dimensions();
  const auto means_shape = means.dimensions();
  const auto factor_shape = factor.dimensions();
  if (x_shape.size() != 3 || means_shape.size() != 3 || layout < 0 || layout > 2) {
    return ffi::Error::InvalidArgument(
        "em_pool_fit: expected x (B, D, n), means (B, K, D), layout 0, 1 or 2");
  }
  const int64_t n_datasets = x_shape[0], n_features = x_shape[1], n_rows = x_shape[2];
  const int64_t n_components = means_shape[1];
  const int64_t covariance_size =
      layout == 0 ? n_features * n_features : (layout == 1 ? n_features : 1);
  const size_t factor_rank = layout == 0 ? 4 : (layout == 1 ? 3 : 2);
  int64_t factor_elements = 1;
  for (auto extent : factor_shape) factor_elements *= extent;
  if (means_shape[0] != n_datasets || means_shape[2] != n_features ||
      centre.element_count() != n_datasets * n_features ||
      weights.element_count() != n_datasets * n_components ||
      mask.element_count() != n_datasets || factor_shape.size() != factor_rank ||
      factor_elements != n_datasets * n_components * covariance_size ||
      rtol.element_count() != 1 || reg_covar.element_count() != 1) {
    return ffi::Error::InvalidArgument("em_pool_fit: inconsistent shapes");
  }
  if (n_components < 1 || n_components > kLaneComponents || n_features < 1 || n_rows < 1 ||
      (layout == 0 && n_features > kFitFeatures) || max_iter < 0) {
    return ffi::Error::InvalidArgument(
        "em_pool_fit: takes 1 to 10 components, at least one row and one feature, at most 8 "
        "features with full covariances, and max_iter >= 0");
  }
  if (n_datasets == 0) return ffi::Error::Success();
  const int64_t n_quadratic =
      layout == 0 ? n_features * (n_features + 1) / 2 : (layout == 1 ? n_features : 1);
  const FitProblem<T> problem{x.typed_data(),
                              centre.typed_data(),
                              weights.typed_data(),
                              means.typed_data(),
                              factor.typed_data(),
                              mask.typed_data(),
                              rtol.typed_data()[0],
                              reg_covar.typed_data()[0],
                              out_weights->typed_data(),
                              out_means->typed_data(),
                              out_covariances->typed_data(),
                              out_factor->typed_data(),
                              out_log_likelihood->typed_data(),
                              out_converged->typed_data(),
                              out_collapsed->typed_data(),
                              out_n_iter->typed_data(),
                              n_features,
                              n_rows,
                              n_quadratic + n_features + 1,
                              n_components,
                              layout,
                              max_iter,
                              covariance_size};
  share_tasks(
      thread_pool, n_datasets, thread_pool.num_threads(),
      [&problem] { return std::make_unique<FitScratch<T>>(problem); },
      [&problem](int64_t dataset, FitScratch<T>& scratch) {
        fit_dataset_of(problem, dataset, scratch);
      });
  return ffi::Error::Success();
}

}  // namespace

#define GAUSSMIX_BIND(dtype)                          \
  ffi::Ffi::Bind()                                    \
      .Ctx<ffi::ThreadPool>()                         \
      .Arg<ffi::Buffer<dtype>>() /* x (N, D) */       \
      .Arg<ffi::Buffer<dtype>>() /* weight (N,) */    \
      .Arg<ffi::Buffer<dtype>>() /* natural (F, K) */ \
      .Ret<ffi::Buffer<dtype>>() /* packed (K, F) */  \
      .Ret<ffi::Buffer<dtype>>() /* log-likelihood */

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmFullStatisticsF64, statistics<ffi::F64>,
                              GAUSSMIX_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmFullStatisticsF32, statistics<ffi::F32>,
                              GAUSSMIX_BIND(ffi::F32));

#define GAUSSMIX_LANE_BIND(dtype)                                \
  ffi::Ffi::Bind()                                               \
      .Ctx<ffi::ThreadPool>()                                    \
      .Arg<ffi::Buffer<dtype>>() /* x (..., D, n) */             \
      .Arg<ffi::Buffer<dtype>>() /* natural (..., F, K) */       \
      .Ret<ffi::Buffer<dtype>>() /* packed (..., K, F) */        \
      .Ret<ffi::Buffer<dtype>>() /* log-likelihood (...) */      \
      .Attr<int64_t>("layout")

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmLaneStatisticsF64, lane_statistics<ffi::F64>,
                              GAUSSMIX_LANE_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmLaneStatisticsF32, lane_statistics<ffi::F32>,
                              GAUSSMIX_LANE_BIND(ffi::F32));

#define GAUSSMIX_FIT_BIND(dtype)                                       \
  ffi::Ffi::Bind()                                                     \
      .Ctx<ffi::ThreadPool>()                                          \
      .Arg<ffi::Buffer<dtype>>()     /* x (B, D, n) */                 \
      .Arg<ffi::Buffer<dtype>>()     /* centre (B, D) */               \
      .Arg<ffi::Buffer<dtype>>()     /* weights (B, K) */              \
      .Arg<ffi::Buffer<dtype>>()     /* means (B, K, D) */             \
      .Arg<ffi::Buffer<dtype>>()     /* factors (B, K, ...) */         \
      .Arg<ffi::Buffer<ffi::S32>>()  /* mask (B,) */                   \
      .Arg<ffi::Buffer<dtype>>()     /* rtol () */                     \
      .Arg<ffi::Buffer<dtype>>()     /* reg_covar () */                \
      .Ret<ffi::Buffer<dtype>>()     /* weights */                     \
      .Ret<ffi::Buffer<dtype>>()     /* means */                       \
      .Ret<ffi::Buffer<dtype>>()     /* covariances */                 \
      .Ret<ffi::Buffer<dtype>>()     /* factors */                     \
      .Ret<ffi::Buffer<dtype>>()     /* log-likelihood (B,) */         \
      .Ret<ffi::Buffer<ffi::S32>>()  /* converged (B,) */              \
      .Ret<ffi::Buffer<ffi::S32>>()  /* collapsed (B,) */              \
      .Ret<ffi::Buffer<ffi::S32>>()  /* n_iter (B,) */                 \
      .Attr<int64_t>("layout")                                         \
      .Attr<int64_t>("max_iter")

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmPoolFitF64, pool_fit<ffi::F64>,
                              GAUSSMIX_FIT_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GaussmixEmPoolFitF32, pool_fit<ffi::F32>,
                              GAUSSMIX_FIT_BIND(ffi::F32));
