// Packed weights in the op glue: their shapes (the one place that computes them; the Python fake
// kernels call it through the packed_shape op), allocation with the header of
// ck/packed_header.h, and the one validation every op that reads a pack runs on it. Shared by the
// CPU and CUDA glue.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "../cpu/int4.h"
#include "../cpu/int8_gemm.h"
#include "../cpu/sparse24.h"
#include "checks.h"
#include "ck/bitpack.h"
#include "ck/packed_header.h"

namespace ck::ops {

using packed::PackedFamily;

inline at::ScalarType packed_dtype(PackedFamily f) {
  return f == PackedFamily::kSparse24F32 ? at::kFloat : f == PackedFamily::kSparse24Bf16 ? at::kBFloat16 : at::kInt;
}

inline int64_t packed_element_size(PackedFamily f) { return f == PackedFamily::kSparse24Bf16 ? 2 : 4; }

// int32 words per row of a 2-D family.
inline int64_t packed_words_per_row(PackedFamily f, int64_t k, int64_t param) {
  if (f == PackedFamily::kInt4) {
    return cpu::int4_words_per_row(k, param % packed::kInt4AsymmetricFlag, param >= packed::kInt4AsymmetricFlag);
  }
  return f == PackedFamily::kCodebook ? ck::bitpack::words_per_row(k, static_cast<int>(param))
                                      : cpu::int8_packed_words_per_row(k);
}

// int4_pack's group sizes.
inline bool int4_group_size_ok(int64_t group_size) {
  return group_size == 32 || group_size == 64 || group_size == 128 || group_size == 256;
}

// Payload elements (of the family's dtype) after the header region.
inline int64_t packed_payload_elements(PackedFamily f, int64_t n, int64_t k, int64_t param) {
  switch (f) {
    case PackedFamily::kInt8:
    case PackedFamily::kInt8Conv2d:
    case PackedFamily::kCodebook:
    case PackedFamily::kInt4:
      return n * packed_words_per_row(f, k, param);
    case PackedFamily::kSparse24F32:
      return cpu::sparse24_f32_packed_floats(n, k);
    case PackedFamily::kSparse24Bf16:
      return cpu::sparse24_bf16_packed_halves(n, k);
    case PackedFamily::kSparse24Int8:
      return cpu::sparse24_int8_packed_words(n, k);
  }
  return 0;
}

// Elements of the header region of a pack of that family and shape (2-D: header_rows(W) rows of W
// words; 1-D: 64 bytes).
inline int64_t packed_header_elements(PackedFamily f, int64_t words_per_row) {
  return packed::family_is_2d(f) ? packed::header_rows(words_per_row) * words_per_row
                                 : packed::kHeaderBytes1d / packed_element_size(f);
}

// The shape of the tensor a pack op returns for N x K (param: bits for codebook_pack, groups for
// int8_conv2d_pack_weight, 0 otherwise); checks the arguments the way the pack ops do.
inline std::vector<int64_t> packed_shape(PackedFamily f, int64_t n, int64_t k, int64_t param, const char* op) {
  const char* name = packed::family_name(f);
  TORCH_CHECK(n > 0 && k > 0, op, ": ", name, " needs N > 0 and K > 0, got N=", n, ", K=", k);
  if (f == PackedFamily::kCodebook) {
    TORCH_CHECK(param >= 1 && param <= 8, op, ": codebook_pack needs bits in [1, 8], got ", param);
  } else if (f == PackedFamily::kInt8Conv2d) {
    TORCH_CHECK(param >= 1 && n % param == 0, op, ": int8_conv2d_pack_weight needs groups >= 1 dividing N=", n,
                ", got groups=", param);
  } else if (f == PackedFamily::kInt4) {
    const int64_t group_size = param % packed::kInt4AsymmetricFlag;
    TORCH_CHECK(param >= 0 && param < 2 * packed::kInt4AsymmetricFlag && int4_group_size_ok(group_size), op,
                ": int4_pack needs the parameter group_size (32, 64, 128 or 256) + ", packed::kInt4AsymmetricFlag,
                " for a pack with zero points, got ", param);
    TORCH_CHECK(k % group_size == 0, op, ": int4_pack needs K a multiple of group_size=", group_size, ", got K=", k);
  } else {
    TORCH_CHECK(param == 0, op, ": ", name, " has no family parameter (pass 0), got ", param);
  }
  if (f == PackedFamily::kSparse24F32 || f == PackedFamily::kSparse24Bf16 || f == PackedFamily::kSparse24Int8) {
    TORCH_CHECK(k % 4 == 0, op, ": ", name, " needs K a multiple of 4 (2:4 groups), got K=", k);
  }
  const int64_t int32_max = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(n <= int32_max && k <= int32_max, op, ": ", name, " records N and K as int32, got N=", n, ", K=", k);
  const int64_t payload = packed_payload_elements(f, n, k, param);
  TORCH_CHECK(payload <= int32_max, op, ": the ", name, " payload of N=", n, ", K=", k, " would hold ", payload,
              " elements, more than the 2^31 - 1 its header records");
  if (packed::family_is_2d(f)) {
    const int64_t words = packed_words_per_row(f, k, param);
    return {packed::header_rows(words) + n, words};
  }
  return {packed_header_elements(f, 0) + payload};
}

// A new pack of family f for N x K with its header written (the rest of the header region zero);
// the caller writes the payload at packed_payload<T>(tensor, f).
inline at::Tensor new_packed(PackedFamily f, int64_t n, int64_t k, int64_t param, const at::TensorOptions& options,
                             const char* op) {
  const std::vector<int64_t> shape = packed_shape(f, n, k, param, op);
  at::Tensor packed = at::empty(shape, options.dtype(packed_dtype(f)));
  const int64_t header_bytes = packed_header_elements(f, shape.size() == 2 ? shape[1] : 0) * packed_element_size(f);
  std::vector<int32_t> words(static_cast<size_t>(header_bytes / 4), 0);
  packed::write_header(words.data(), f, n, k, param, packed_payload_elements(f, n, k, param));
  if (packed.is_cpu()) {
    std::memcpy(packed.data_ptr(), words.data(), static_cast<size_t>(header_bytes));
  } else {  // one small host-to-device copy, ordered on the current stream like the packing kernel
    const at::Tensor host = at::from_blob(words.data(), {header_bytes / 4}, at::TensorOptions().dtype(at::kInt));
    packed.view({-1}).view(at::kByte).narrow(0, 0, header_bytes).copy_(host.view(at::kByte));
  }
  return packed;
}

// What a valid header says about a pack.
struct PackedInfo {
  PackedFamily family = PackedFamily::kInt8;
  int64_t n = 0, k = 0, param = 0;
  int64_t header_elements = 0;  // elements of the header region: the payload starts there
};

// The payload (what the kernels read) of a pack checked by check_packed.
template <typename T>
T* packed_payload(const at::Tensor& packed, const PackedInfo& info) {
  return packed.data_ptr<T>() + info.header_elements;
}

// What the op expects of a pack; -1 / nullptr: anything.
struct PackedExpect {
  int64_t n = -1, k = -1, param = -1;
  const char* n_from = nullptr;  // where the op took N from ("meta", "w"), for messages
  const char* k_from = nullptr;  // where the op took K from ("x"), for messages
};

inline std::string describe_packed(PackedFamily f, int64_t n, int64_t k, int64_t param) {
  const int32_t id = static_cast<int32_t>(f);
  std::ostringstream s;
  s << (f == PackedFamily::kInt8 || f == PackedFamily::kInt8Conv2d || f == PackedFamily::kInt4 ? "an " : "a ")
    << packed::family_name(id) << " (";
  if (f == PackedFamily::kCodebook) s << "bits=" << param << ", ";
  if (f == PackedFamily::kInt4) {
    s << "group_size=" << param % packed::kInt4AsymmetricFlag << ", "
      << (param >= packed::kInt4AsymmetricFlag ? "asymmetric" : "symmetric") << ", ";
  }
  if (f == PackedFamily::kInt8Conv2d) s << "groups=" << param << ", ";
  s << "N=" << n << ", K=" << k << ")";
  return s.str();
}

inline std::string describe_expected(PackedFamily f, const PackedExpect& e) {
  std::ostringstream s;
  s << (f == PackedFamily::kInt8 || f == PackedFamily::kInt8Conv2d || f == PackedFamily::kInt4 ? "an " : "a ")
    << packed::family_name(f);
  std::vector<std::string> parts;
  if (e.param >= 0 && f == PackedFamily::kCodebook) parts.push_back("bits=" + std::to_string(e.param));
  if (e.param >= 0 && f == PackedFamily::kInt8Conv2d) parts.push_back("groups=" + std::to_string(e.param));
  if (e.n >= 0) parts.push_back("N=" + std::to_string(e.n) + (e.n_from ? std::string(" (from ") + e.n_from + ")" : ""));
  if (e.k >= 0) parts.push_back("K=" + std::to_string(e.k) + (e.k_from ? std::string(" (from ") + e.k_from + ")" : ""));
  for (size_t i = 0; i < parts.size(); ++i) s << (i == 0 ? " for " : ", ") << parts[i];
  return s.str();
}

// The header words of t (t contiguous, at storage offset 0, >= 32 bytes). On a CPU tensor they are
// read in place; on another device (CUDA) the 32 bytes are copied to the host, which waits for the
// work queued on the current stream (a synchronization per call: see the ops' comments).
inline std::array<int32_t, packed::kHeaderWords> read_packed_header(const at::Tensor& t) {
  std::array<int32_t, packed::kHeaderWords> words{};
  constexpr int64_t bytes = packed::kHeaderWords * 4;
  if (t.is_cpu()) {
    std::memcpy(words.data(), t.data_ptr(), bytes);
  } else {
    const at::Tensor host = t.view({-1}).view(at::kByte).narrow(0, 0, bytes).to(at::kCPU).contiguous();
    std::memcpy(words.data(), host.data_ptr(), bytes);
  }
  return words;
}

// A size of a packed weight or of what it must match, as an integer: weight shapes are static
// (under torch.compile / torch.export a symbolic one is specialized to its value here).
inline int64_t concrete_size(const c10::SymInt& s) { return s.guard_int(__FILE__, __LINE__); }

// check_packed on a tensor without data (meta / fake, under torch.compile and torch.export): what
// its dtype, rank, layout and shape say, checked like check_packed checks them against the
// header. N is the rows after the header rows (2-D) and is checked with K and the family parameter
// against `e`; a 1-D pack's length against the one that N and K of `e` imply. The header words
// themselves are checked when the op runs on the data.
inline PackedInfo check_packed_shape(const at::Tensor& t, PackedFamily want, const PackedExpect& e, const char* op,
                                     const char* name) {
  const char* want_fn = packed::family_name(want);
  check_dtype(t, packed_dtype(want), op, name);
  check_dim(t, packed::family_is_2d(want) ? 2 : 1, op, name);
  TORCH_CHECK(t.is_contiguous(), op, ": packed ", name, " must be contiguous (as ", want_fn, " returns it), got shape ",
              t.sym_sizes(), " with strides ", t.sym_strides());
  PackedInfo info;
  info.family = want;
  info.k = e.k;
  info.param = e.param < 0 ? 0 : e.param;
  if (packed::family_is_2d(want)) {
    const int64_t rows = concrete_size(t.sym_size(0)), words = concrete_size(t.sym_size(1));
    const int64_t header = packed::header_rows(words);
    TORCH_CHECK(rows > header, op, ": ", name, " of shape ", t.sym_sizes(), " has no rows after its ", header,
                " header rows: not a whole ", want_fn);
    info.n = rows - header;
    info.header_elements = header * words;
    if (e.k >= 0 && (want != PackedFamily::kCodebook || e.param >= 0)) {
      const int64_t expected_words = packed_words_per_row(want, e.k, info.param);
      TORCH_CHECK(words == expected_words, op, ": ", name, " has rows of ", words, " words, ",
                  describe_expected(want, e), " has rows of ", expected_words, " (a pack for another K?)");
    }
    TORCH_CHECK(e.n < 0 || e.n == info.n, op, ": ", name, " holds N=", info.n, " rows after its header, expected ",
                describe_expected(want, e));
  } else {
    info.n = e.n;
    info.header_elements = packed_header_elements(want, 0);
    if (e.n >= 0 && e.k >= 0) {
      const std::vector<int64_t> shape = packed_shape(want, e.n, e.k, info.param, op);
      TORCH_CHECK(t.sym_size(0) == shape[0], op, ": ", name, " has ", t.sym_size(0), " elements, ",
                  describe_expected(want, e), " has ", shape[0]);
    }
  }
  return info;
}

// The one validation of a packed weight `name` given to `op`, which wants a pack of family `want`
// matching `e`. O(1): reads the header words only, never the payload. Checks, in order: a dtype
// that some family packs into, contiguous and at storage offset 0 (not a slice or view of a pack),
// large enough to hold a header, the magic word (without it: the wanted dtype and rank, then "not
// a packed weight"), the check value, the layout version, the family, the wanted dtype and rank,
// the shape the header implies (a truncated or row-sliced copy contradicts it), then N, K and the
// family parameter against what the op derived from its other arguments. On a tensor without data
// (meta / fake) it runs check_packed_shape.
inline PackedInfo check_packed(const at::Tensor& t, PackedFamily want, const PackedExpect& e, const char* op,
                               const char* name) {
  if (t.is_meta()) return check_packed_shape(t, want, e, op, name);
  const char* want_fn = packed::family_name(want);
  const at::ScalarType dt = t.scalar_type();
  if (dt != at::kInt && dt != at::kFloat && dt != at::kBFloat16) {
    check_dtype(t, packed_dtype(want), op, name);  // no family packs into this dtype
  }
  const bool says_packed = std::string(name).find("packed") != std::string::npos;  // packed_idx, w_packed
  TORCH_CHECK(t.is_contiguous(), op, ": ", says_packed ? "" : "packed ", name, " must be contiguous (as ", want_fn,
              " returns it), got shape ", t.sizes(), " with strides ", t.strides(),
              " (a column slice or transpose of a packed weight?)");
  TORCH_CHECK(t.storage_offset() == 0, op, ": ", name, " is a view at storage offset ", t.storage_offset(),
              " into a larger tensor (a slice of a packed weight?): pass the whole tensor ", want_fn, " returned");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4 == 0, op, ": ", name,
              " must start 4-byte aligned like every allocation, got address ", t.data_ptr());
  const std::string no_header = std::string(op) + ": " + name +
                                " is not a packed weight of any family (no header; packed by an older layout "
                                "version, sliced, or not packed at all): repack it with " +
                                want_fn;
  TORCH_CHECK(t.numel() * static_cast<int64_t>(t.element_size()) >= packed::kHeaderWords * 4, no_header, " (it holds ",
              t.numel() * static_cast<int64_t>(t.element_size()), " bytes, fewer than the ", packed::kHeaderWords * 4,
              "-byte header)");
  const std::array<int32_t, packed::kHeaderWords> h = read_packed_header(t);
  if (h[packed::kWordMagic] != packed::kMagic) {  // not a pack: say first what is plainly wrong with it
    check_dtype(t, packed_dtype(want), op, name);
    check_dim(t, packed::family_is_2d(want) ? 2 : 1, op, name);
    TORCH_CHECK(false, no_header);
  }
  const int32_t check = packed::header_check(h.data());
  TORCH_CHECK(h[packed::kWordCheck] == check, op, ": the header of ", name, " is corrupted (check value ",
              h[packed::kWordCheck], ", the header words hash to ", check, "): repack it with ", want_fn);
  TORCH_CHECK(h[packed::kWordVersion] == packed::kLayoutVersion, op, ": ", name, " was packed by layout version ",
              h[packed::kWordVersion], "; this build reads version ", packed::kLayoutVersion, ": repack it with ",
              want_fn);
  const int32_t family = h[packed::kWordFamily];
  TORCH_CHECK(family >= packed::kFirstFamily && family <= packed::kLastFamily, op, ": ", name,
              " has a header of unknown family ", family, ": repack it with ", want_fn);
  PackedInfo info;
  info.family = static_cast<PackedFamily>(family);
  info.n = h[packed::kWordN];
  info.k = h[packed::kWordK];
  info.param = h[packed::kWordParam];
  const std::string have = describe_packed(info.family, info.n, info.k, info.param);
  TORCH_CHECK(info.family == want, op, ": ", name, " is ", have, ", expected ", describe_expected(want, e));
  check_dtype(t, packed_dtype(want), op, name);
  check_dim(t, packed::family_is_2d(want) ? 2 : 1, op, name);
  std::vector<int64_t> shape;
  try {
    shape = packed_shape(info.family, info.n, info.k, info.param, op);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, op, ": the header of ", name, " describes an impossible ", want_fn, " (N=", info.n,
                ", K=", info.k, ", parameter ", info.param, "): repack it");
  }
  TORCH_CHECK(t.scalar_type() == packed_dtype(info.family) && t.sizes() == at::IntArrayRef(shape), op, ": ", name, " (",
              t.scalar_type(), " of shape ", t.sizes(), ") contradicts its header: ", have, " is ",
              packed_dtype(info.family), " of shape ", at::IntArrayRef(shape),
              " (a sliced, truncated or reshaped copy of a packed weight?): repack it with ", want_fn);
  TORCH_CHECK(h[packed::kWordPayload] == packed_payload_elements(info.family, info.n, info.k, info.param), op,
              ": the header of ", name, " records a payload of ", h[packed::kWordPayload], " elements, ", have,
              " holds ", packed_payload_elements(info.family, info.n, info.k, info.param), ": repack it with ",
              want_fn);
  const bool n_ok = e.n < 0 || e.n == info.n, k_ok = e.k < 0 || e.k == info.k;
  const bool param_ok = e.param < 0 || e.param == info.param;
  TORCH_CHECK(n_ok && k_ok && param_ok, op, ": ", name, " is ", have, ", expected ", describe_expected(want, e));
  info.header_elements = packed_header_elements(info.family, shape.size() == 2 ? shape[1] : 0);
  return info;
}

// For an op that learns K only after reading N from the pack (a conv's depth needs the output
// channels): a pack already validated by check_packed against `expect` without K, checked against
// K now, with check_packed's message.
inline void check_packed_k(const PackedInfo& info, PackedExpect expect, int64_t k, const char* k_from, const char* op,
                           const char* name) {
  expect.k = k;
  expect.k_from = k_from;
  TORCH_CHECK(info.k == k, op, ": ", name, " is ", describe_packed(info.family, info.n, info.k, info.param),
              ", expected ", describe_expected(info.family, expect));
}

}  // namespace ck::ops
