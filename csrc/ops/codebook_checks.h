// Argument checks of the codebook ops shared by the CPU glue (cpu_codebook.cpp), the CUDA glue
// (cuda_codebook.cpp) and the Meta kernels (meta.cpp): same checks, same messages. Sizes may be
// symbolic; value checks (index range, packed header) are skipped on tensors without data. Device
// checks (CPU / CUDA) stay in each glue.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>

#include "checks.h"
#include "ck/bitpack.h"
#include "packed_checks.h"

namespace ck::ops {

inline void check_codebook_bits(int64_t bits, const char* op) {
  TORCH_CHECK(bits >= 1 && bits <= 8, op, ": bits must be in [1, 8], got ", bits);
}

// codebook_pack's bits and idx: 2-D, an integer dtype, non-empty, values in [0, 2^bits). Reads min /
// max back (a stream synchronization on CUDA; packing runs once per model, not per call).
inline void check_codebook_idx(const at::Tensor& idx, int64_t bits, const char* op) {
  check_codebook_bits(bits, op);
  check_dim(idx, 2, op, "idx");
  const auto dt = idx.scalar_type();
  TORCH_CHECK(dt == at::kByte || dt == at::kInt || dt == at::kLong || dt == at::kShort || dt == at::kChar, op,
              ": idx must be an integer tensor (uint8, int8, int16, int32 or int64), got ", dt);
  TORCH_CHECK(idx.sym_size(0) > 0 && idx.sym_size(1) > 0, op,
              ": idx must have at least one row and one column, got shape ", idx.sym_sizes());
  if (idx.is_meta()) return;
  const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < (int64_t{1} << bits), op, ": idx values must be in [0, ", (int64_t{1} << bits) - 1,
              "] for bits=", bits, ", got values in [", lo, ", ", hi, "]");
}

// A packed index tensor as codebook_pack returns it, validated (packed_checks.h) for `bits`-bit
// indices of K=k taken from k_from (k < 0: any K, for the conv, which checks it with
// check_packed_k once N gave it the depth); returns what its header says (N, the payload offset). On CUDA
// the header is read back to the host (see read_packed_header). The device is the caller's check.
inline PackedInfo check_codebook_packed(const at::Tensor& packed, int64_t bits, int64_t k, const char* k_from,
                                        const char* op) {
  PackedExpect expect;
  expect.k = k;
  expect.k_from = k_from;
  expect.param = bits;
  return check_packed(packed, PackedFamily::kCodebook, expect, op, "packed_idx");
}

// The codebook [G, 2^bits] fp32 (G divides N) and bias [N] fp32 next to packed_idx; all on x's
// device. Returns the output rows per codebook, N / G.
inline int64_t check_codebook_weight(const at::Tensor& packed, const PackedInfo& info, const at::Tensor& codebook,
                                     int64_t bits, const std::optional<at::Tensor>& bias, const at::Tensor& x,
                                     const char* op) {
  check_same_device(packed, x, op, "packed_idx");
  const int64_t n = info.n, entries = int64_t{1} << bits;
  check_dtype(codebook, at::kFloat, op, "codebook");
  check_dim(codebook, 2, op, "codebook");
  check_same_device(codebook, x, op, "codebook");
  TORCH_CHECK(codebook.sym_size(1) == entries, op, ": codebook must have 2^bits = ", entries,
              " entries per group ([G, ", entries, "]), got shape ", codebook.sym_sizes());
  const int64_t groups = concrete_size(codebook.sym_size(0));
  TORCH_CHECK(groups >= 1 && n % groups == 0, op, ": the number of codebooks G=", groups,
              " must divide the number of output rows N=", n);
  if (bias.has_value()) {
    check_dtype(*bias, at::kFloat, op, "bias");
    check_same_device(*bias, x, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == n, op, ": bias must have shape [", n, "], got ",
                bias->sym_sizes());
  }
  return n / groups;
}

// codebook_unpack: bits, k >= 1 and packed_idx a pack of `bits`-bit indices for that K.
inline PackedInfo check_codebook_unpack(const at::Tensor& packed, int64_t bits, int64_t k, const char* op) {
  check_codebook_bits(bits, op);
  TORCH_CHECK(k > 0, op, ": k must be > 0, got ", k);
  return check_codebook_packed(packed, bits, k, "the k argument", op);
}

// codebook_decode: codebook_unpack's arguments and the codebook next to the pack (check_codebook_weight).
inline PackedInfo check_codebook_decode(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k,
                                        const char* op) {
  const PackedInfo info = check_codebook_unpack(packed, bits, k, op);
  check_codebook_weight(packed, info, codebook, bits, std::nullopt, packed, op);
  return info;
}

// codebook_linear: x fp32 or bf16 [M, K] with K >= 1, packed_idx a pack of `bits`-bit indices for that K,
// the codebook and bias next to it (check_codebook_weight).
inline PackedInfo check_codebook_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& codebook,
                                        int64_t bits, const std::optional<at::Tensor>& bias, const char* op) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, op,
              ": x must be Float or BFloat16, got ", x.scalar_type());
  check_dim(x, 2, op, "x");
  TORCH_CHECK(x.sym_size(1) > 0, op, ": x must have K > 0 columns, got shape ", x.sym_sizes());
  check_codebook_bits(bits, op);
  const PackedInfo info = check_codebook_packed(packed, bits, concrete_size(x.sym_size(1)), "x", op);
  check_codebook_weight(packed, info, codebook, bits, bias, x, op);
  return info;
}

inline std::array<int64_t, 2> codebook_pair_arg(at::IntArrayRef v, const char* op, const char* name,
                                                int64_t min_value) {
  TORCH_CHECK(v.size() == 2 || v.size() == 1, op, ": ", name, " must have 1 or 2 elements, got ", v.size());
  const std::array<int64_t, 2> p = {v[0], v.size() == 2 ? v[1] : v[0]};
  TORCH_CHECK(p[0] >= min_value && p[1] >= min_value, op, ": ", name, " must be >= ", min_value, ", got ", v);
  return p;
}

// codebook_conv2d's geometry: kernel / stride / padding / dilation pairs, groups, output size and
// the reduction depth K = C / groups * kh * kw of the flattened weight.
// The batch and the spatial sizes may be symbolic (SymInt); the rest is static.
struct CodebookConvShape {
  std::array<int64_t, 2> ks, st, pd, dl;
  c10::SymInt batch, h, w, ho, wo;
  int64_t channels, out_channels, per_group, k;
};

// x must already be checked 4-D and packed_idx validated (its N is the output channels).
inline CodebookConvShape check_codebook_conv(const at::Tensor& x, const PackedInfo& packed, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                             int64_t groups, const char* op) {
  CodebookConvShape s;
  s.ks = codebook_pair_arg(kernel_size, op, "kernel_size", 1);
  s.st = codebook_pair_arg(stride, op, "stride", 1);
  s.pd = codebook_pair_arg(padding, op, "padding", 0);
  s.dl = codebook_pair_arg(dilation, op, "dilation", 1);
  s.batch = x.sym_size(0), s.channels = concrete_size(x.sym_size(1)), s.h = x.sym_size(2), s.w = x.sym_size(3);
  TORCH_CHECK(groups >= 1 && s.channels % groups == 0, op, ": groups=", groups,
              " must be >= 1 and divide the input channels C=", s.channels);
  s.out_channels = packed.n;
  TORCH_CHECK(s.out_channels % groups == 0, op, ": groups=", groups, " must divide the output channels ",
              s.out_channels);
  s.per_group = s.out_channels / groups;
  TORCH_CHECK(groups == 1 || s.per_group % ck::bitpack::kBlockRows == 0, op,
              ": with groups > 1 the output channels per group must be a multiple of 16 (the packed block "
              "size), got ",
              s.per_group, " (depthwise convolution is not supported)");
  const c10::SymInt span_h = s.h + 2 * s.pd[0] - s.dl[0] * (s.ks[0] - 1) - 1;
  const c10::SymInt span_w = s.w + 2 * s.pd[1] - s.dl[1] * (s.ks[1] - 1) - 1;
  TORCH_CHECK(span_h >= 0 && span_w >= 0, op, ": the (padded) input ", s.h, "x", s.w,
              " is smaller than the dilated kernel ", s.ks[0], "x", s.ks[1]);
  s.ho = span_h / s.st[0] + 1;
  s.wo = span_w / s.st[1] + 1;
  s.k = s.channels / groups * s.ks[0] * s.ks[1];
  return s;
}

// codebook_conv2d: x fp32 [N, C, H, W], packed_idx a pack of `bits`-bit indices whose N is the
// output channels and whose K is C / groups * kh * kw, the geometry (check_codebook_conv), the
// codebook and bias (check_codebook_weight).
inline CodebookConvShape check_codebook_conv2d(const at::Tensor& x, const at::Tensor& packed,
                                               const at::Tensor& codebook, int64_t bits,
                                               const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, int64_t groups, PackedInfo& info,
                                               const char* op) {
  check_dtype(x, at::kFloat, op, "x");
  check_dim(x, 4, op, "x");
  check_codebook_bits(bits, op);
  info = check_codebook_packed(packed, bits, -1, nullptr, op);
  const CodebookConvShape s = check_codebook_conv(x, info, kernel_size, stride, padding, dilation, groups, op);
  PackedExpect expect;
  expect.param = bits;
  if (packed.is_meta()) {  // N came from the shape alone: now that K is known, the row width too
    expect.k = s.k;
    expect.k_from = "x and kernel_size: C/groups * kh * kw";
    check_packed_shape(packed, PackedFamily::kCodebook, expect, op, "packed_idx");
  } else {
    check_packed_k(info, expect, s.k, "x and kernel_size: C/groups * kh * kw", op, "packed_idx");
  }
  check_codebook_weight(packed, info, codebook, bits, bias, x, op);
  return s;
}

}  // namespace ck::ops
