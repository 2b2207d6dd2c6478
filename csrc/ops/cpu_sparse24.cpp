// CPU glue of the 2:4 sparse ops: argument checks, output allocation, threading. The kernels are
// torch-free (csrc/cpu/sparse24*.{h,cpp}); the layout is documented in csrc/include/ck/sparse24.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu/isa.h"
#include "../cpu/sparse24.h"
#include "checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

void check_k(int64_t k, const char* op) {
  TORCH_CHECK(k > 0 && k % 4 == 0, op, ": K (the reduction dimension, kh * kw * in_channels for a conv) must be a ",
              "positive multiple of 4 for 2:4 sparsity, got K=", k);
}

std::tuple<at::Tensor, at::Tensor> sparse24_compress_cpu(const at::Tensor& w) {
  constexpr const char* op = "sparse24_compress";
  check_dim(w, 2, op, "w");
  check_cpu(w, op, "w");
  const int64_t n = w.size(0), k = w.size(1);
  check_k(k, op);
  const at::Tensor wc = w.contiguous();
  at::Tensor values = at::empty({n, k / 2}, w.options());
  at::Tensor meta = at::empty({n, sparse24::meta_cols(k)}, w.options().dtype(at::kByte));
  int64_t bad = -1;
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sparse24_compress", [&] {
    bad = cpu::sparse24_compress<scalar_t>(wc.data_ptr<scalar_t>(), n, k, k, values.data_ptr<scalar_t>(),
                                           meta.data_ptr<uint8_t>());
  });
  TORCH_CHECK(bad < 0, op, ": w is not 2:4 sparse: row ", bad / (k / 4), ", columns ", 4 * (bad % (k / 4)), "..",
              4 * (bad % (k / 4)) + 3, " hold more than two non-zeros (prune it first, e.g. with ",
              "compress_kernels.prune.mask_2to4)");
  return {values, meta};
}

// values [N, K/2] and meta uint8 [N, ceil(K/8)]; returns K. check_nibbles reads every nibble.
int64_t check_compressed(const at::Tensor& values, const at::Tensor& meta, const char* op, bool check_nibbles) {
  check_dim(values, 2, op, "values");
  check_dim(meta, 2, op, "meta");
  check_dtype(meta, at::kByte, op, "meta");
  check_cpu(values, op, "values");
  check_cpu(meta, op, "meta");
  const int64_t n = values.size(0), k = 2 * values.size(1);
  check_k(k, op);
  TORCH_CHECK(meta.size(0) == n && meta.size(1) == sparse24::meta_cols(k), op, ": meta must have shape [", n, ", ",
              sparse24::meta_cols(k), "] for values of shape ", values.sizes(), ", got ", meta.sizes());
  if (check_nibbles) {
    const at::Tensor mc = meta.contiguous();
    const int64_t bad = cpu::sparse24_check_meta(mc.data_ptr<uint8_t>(), n, k);
    TORCH_CHECK(bad < 0, op, ": meta is not a valid 2:4 metadata: row ", bad / (k / 4), ", group ", bad % (k / 4),
                " has a nibble whose two positions are not increasing (or a non-zero padding nibble)");
  }
  return k;
}

at::Tensor sparse24_decompress_cpu(const at::Tensor& values, const at::Tensor& meta) {
  constexpr const char* op = "sparse24_decompress";
  const int64_t k = check_compressed(values, meta, op, true);
  const int64_t n = values.size(0);
  at::Tensor w = at::empty({n, k}, values.options());
  const at::Tensor vc = values.contiguous(), mc = meta.contiguous();
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "sparse24_decompress", [&] {
    cpu::sparse24_decompress<scalar_t>(vc.data_ptr<scalar_t>(), mc.data_ptr<uint8_t>(), n, k, w.data_ptr<scalar_t>());
  });
  return w;
}

// The checks every pack op shares (values of `dtype` [N >= 1, K/2] + valid meta), then
// pack(values, meta, n, k) -> the packed 1-D tensor.
template <typename Pack>
at::Tensor pack_checked(const at::Tensor& values, const at::Tensor& meta, const char* op, at::ScalarType dtype,
                        Pack pack) {
  check_dtype(values, dtype, op, "values");
  const int64_t k = check_compressed(values, meta, op, true);
  const int64_t n = values.size(0);
  TORCH_CHECK(n > 0, op, ": values must have at least one row, got shape ", values.sizes());
  return pack(values.contiguous(), meta.contiguous(), n, k);
}

at::Tensor sparse24_f32_pack_cpu(const at::Tensor& values, const at::Tensor& meta) {
  return pack_checked(
      values, meta, "sparse24_f32_pack", at::kFloat,
      [](const at::Tensor& v, const at::Tensor& m, int64_t n, int64_t k) {
        at::Tensor packed = new_packed(PackedFamily::kSparse24F32, n, k, 0, v.options(), "sparse24_f32_pack");
        float* payload = packed.data_ptr<float>() + packed_header_elements(PackedFamily::kSparse24F32, 0);
        cpu::sparse24_f32_pack(v.data_ptr<float>(), m.data_ptr<uint8_t>(), n, k, payload);
        return packed;
      });
}

// A packed weight of N x K (read from its header) belongs to meta and to inputs of x_k values.
void check_packed_matches(const char* op, const at::Tensor& meta, int64_t n, int64_t k, int64_t x_k,
                          const char* k_name) {
  TORCH_CHECK(meta.dim() == 2 && meta.size(0) == n && meta.size(1) == sparse24::meta_cols(k), op, ": meta of shape ",
              meta.sizes(), " does not belong to the packed weight (N=", n, ", K=", k, ")");
  TORCH_CHECK(x_k == k, op, ": K mismatch: ", k_name, " has K=", x_k, " but the weight holds K=", k);
}

// A 1-D pack of family f given as `values` (or packed from them for this call), validated
// (packed_checks.h); then the N and K of its header against meta's shape and the x_k values of the
// op's input rows (check_packed_matches, whose messages name meta and x).
PackedInfo check_sparse24_packed(const at::Tensor& values, PackedFamily f, const at::Tensor& meta, int64_t x_k,
                                 const char* k_name, const char* op) {
  check_cpu(values, op, "values");
  const PackedInfo info = check_packed(values, f, PackedExpect{}, op, "values");
  check_packed_matches(op, meta, info.n, info.k, x_k, k_name);
  return info;
}

// The weight and bias of an fp32 2:4 op whose input rows hold K values: checked and filled into
// args (x, m, ldx and out are the caller's).
struct Sparse24F32Call {
  at::Tensor packed, bias;
  cpu::Sparse24F32Args args;
};

Sparse24F32Call prepare_sparse24_f32(const char* op, int64_t x_k, const at::Tensor& values, const at::Tensor& meta,
                                     const std::optional<at::Tensor>& bias, const char* k_name) {
  Sparse24F32Call call;
  check_cpu(values, op, "values");
  if (values.dim() != 1) {
    check_dtype(values, at::kFloat, op, "values");
    call.packed = sparse24_f32_pack_cpu(values, meta);
  } else {
    call.packed = values;  // a packed weight from sparse24_f32_pack; meta's N and x's K are checked against it
  }
  const PackedInfo info = check_sparse24_packed(call.packed, PackedFamily::kSparse24F32, meta, x_k, k_name, op);
  const float* payload = packed_payload<float>(call.packed, info);
  int64_t n = 0, k = 0;
  cpu::sparse24_f32_packed_shape(payload, call.packed.numel() - info.header_elements, &n, &k);
  TORCH_CHECK(n == info.n && k == info.k, op, ": the trailer of the sparse24_f32_pack payload (N=", n, ", K=", k,
              ") contradicts its header (N=", info.n, ", K=", info.k, "): repack it with sparse24_f32_pack");
  if (bias.has_value()) {
    check_dtype(*bias, at::kFloat, op, "bias");
    check_cpu(*bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, op, ": bias must have shape [", n, "], got ", bias->sizes());
    call.bias = bias->contiguous();
  }
  call.args.packed = payload;
  call.args.n = n;
  call.args.k = k;
  call.args.bias = bias.has_value() ? call.bias.data_ptr<float>() : nullptr;
  return call;
}

at::Tensor sparse24_bf16_pack_cpu(const at::Tensor& values, const at::Tensor& meta) {
  return pack_checked(values, meta, "sparse24_bf16_pack", at::kBFloat16,
                      [](const at::Tensor& v, const at::Tensor& m, int64_t n, int64_t k) {
                        at::Tensor packed =
                            new_packed(PackedFamily::kSparse24Bf16, n, k, 0, v.options(), "sparse24_bf16_pack");
                        at::BFloat16* payload =
                            packed.data_ptr<at::BFloat16>() + packed_header_elements(PackedFamily::kSparse24Bf16, 0);
                        cpu::sparse24_bf16_pack(reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>()),
                                                m.data_ptr<uint8_t>(), n, k, reinterpret_cast<uint16_t*>(payload));
                        return packed;
                      });
}

// sparse24_linear with bf16 x: values bf16 [N, K/2] (packed for this call) or sparse24_bf16_pack's
// 1-D tensor; bias bf16 or fp32 (added in fp32); output bf16.
at::Tensor sparse24_bf16_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                                const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "sparse24_linear";
  check_cpu(values, op, "values");
  at::Tensor packed = values;  // 1-D: a packed weight from sparse24_bf16_pack
  if (values.dim() != 1) {
    TORCH_CHECK(values.scalar_type() == at::kBFloat16, op,
                ": with bf16 x, values must be bf16 [N, K/2] or sparse24_bf16_pack's packed tensor, got ",
                values.scalar_type());
    packed = sparse24_bf16_pack_cpu(values, meta);
  }
  const PackedInfo info = check_sparse24_packed(packed, PackedFamily::kSparse24Bf16, meta, x.size(1), "x", op);
  cpu::Sparse24Bf16Args args;
  args.packed = reinterpret_cast<const uint16_t*>(packed_payload<at::BFloat16>(packed, info));
  cpu::sparse24_bf16_packed_shape(args.packed, packed.numel() - info.header_elements, &args.n, &args.k);
  TORCH_CHECK(args.n == info.n && args.k == info.k, op, ": the trailer of the sparse24_bf16_pack payload (N=", args.n,
              ", K=", args.k, ") contradicts its header (N=", info.n, ", K=", info.k,
              "): repack it with sparse24_bf16_pack");
  at::Tensor bias_f32;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kBFloat16 || bias->scalar_type() == at::kFloat, op,
                ": with bf16 x, bias must be bf16 or fp32, got ", bias->scalar_type());
    check_cpu(*bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == args.n, op, ": bias must have shape [", args.n, "], got ",
                bias->sizes());
    bias_f32 = bias->to(at::kFloat).contiguous();
    args.bias = bias_f32.data_ptr<float>();
  }
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, args.n}, x.options());
  if (m == 0) return out;
  const at::Tensor xc = x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
  args.x = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
  args.m = m;
  args.ldx = m > 1 ? xc.stride(0) : args.k;
  args.out = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const cpu::Sparse24Bf16Plan plan = cpu::sparse24_int8_plan(m, args.n, at::get_num_threads());
  at::parallel_for(0, plan.tasks(), 1, [&](int64_t b, int64_t e) { cpu::sparse24_bf16_run(args, plan, b, e); });
  return out;
}

at::Tensor sparse24_linear_cpu(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                               const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "sparse24_linear";
  check_dim(x, 2, op, "x");
  check_cpu(x, op, "x");
  if (x.scalar_type() == at::kBFloat16) return sparse24_bf16_linear(x, values, meta, bias);
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32 or bfloat16 on the CPU, got ", x.scalar_type());
  Sparse24F32Call call = prepare_sparse24_f32(op, x.size(1), values, meta, bias, "x");
  cpu::Sparse24F32Args& args = call.args;
  const int64_t m = x.size(0);
  at::Tensor out = at::empty({m, args.n}, x.options());
  if (m == 0) return out;
  const at::Tensor xc = x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
  args.x = xc.data_ptr<float>();
  args.m = m;
  args.ldx = m > 1 ? xc.stride(0) : args.k;
  args.out = out.data_ptr<float>();
  const cpu::Sparse24Plan plan = cpu::sparse24_f32_plan(m, args.n);
  at::parallel_for(0, plan.tasks(), 1, [&](int64_t b, int64_t e) { cpu::sparse24_f32_run(args, plan, b, e); });
  return out;
}

at::Tensor sparse24_int8_pack_cpu(const at::Tensor& values, const at::Tensor& meta) {
  constexpr const char* op = "sparse24_int8_pack";
  return pack_checked(
      values, meta, op, at::kChar, [op](const at::Tensor& v, const at::Tensor& m, int64_t n, int64_t k) {
        check_depth(k, op);
        at::Tensor packed = new_packed(PackedFamily::kSparse24Int8, n, k, 0, v.options(), op);
        int32_t* payload = packed.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kSparse24Int8, 0);
        cpu::sparse24_int8_pack(v.data_ptr<int8_t>(), m.data_ptr<uint8_t>(), n, k, payload);
        return packed;
      });
}

// The weight, bias and output stage of an int8 2:4 op whose input rows hold K values: checked and
// filled into args (x, m, ldx and out are the caller's).
struct Sparse24Int8Call {
  at::Tensor packed, bias, m0, shift;
  cpu::Sparse24Int8Args args;
};

Sparse24Int8Call prepare_sparse24_int8(const char* op, int64_t x_k, const at::Tensor& values, const at::Tensor& meta,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                       const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                       at::ScalarType out_dtype, c10::string_view rounding, const char* k_name) {
  Sparse24Int8Call call;
  check_cpu(values, op, "values");
  if (values.dim() == 1) {
    call.packed = values;  // a packed weight from sparse24_int8_pack; meta's N and x's K are checked against it
  } else {
    TORCH_CHECK(values.scalar_type() == at::kChar, op,
                ": values must be int8 [N, K/2] or an int32 packed weight from sparse24_int8_pack, got ",
                values.scalar_type(), " of shape ", values.sizes());
    call.packed = sparse24_int8_pack_cpu(values, meta);
  }
  const PackedInfo info = check_sparse24_packed(call.packed, PackedFamily::kSparse24Int8, meta, x_k, k_name, op);
  const cpu::PackedSparse24Int8 w = cpu::sparse24_int8_packed_view(packed_payload<int32_t>(call.packed, info),
                                                                   call.packed.numel() - info.header_elements);
  TORCH_CHECK(w.n == info.n && w.k == info.k, op, ": the trailer of the sparse24_int8_pack payload (N=", w.n,
              ", K=", w.k, ") contradicts its header (N=", info.n, ", K=", info.k,
              "): repack it with sparse24_int8_pack");
  check_depth(w.k, op);
  check_cpu(m0, op, "m0");
  check_cpu(shift, op, "shift");
  const bool per_channel = check_multiplier(m0, shift, w.n, op);
  check_output_range(out_dtype, out_zero_point, qmin, qmax, op);
  if (bias.has_value()) {
    check_dtype(*bias, at::kInt, op, "bias");
    check_cpu(*bias, op, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == w.n, op, ": bias must have shape [", w.n, "], got ",
                bias->sizes());
    call.bias = bias->contiguous();
  }
  call.m0 = m0.contiguous();
  call.shift = shift.contiguous();
  cpu::Sparse24Int8Args& args = call.args;
  args.w = w;
  args.bias_i32 = bias.has_value() ? call.bias.data_ptr<int32_t>() : nullptr;
  args.requant.m0 = call.m0.data_ptr<int32_t>();
  args.requant.shift = call.shift.data_ptr<int32_t>();
  args.requant.per_channel = per_channel;
  args.requant.zero_point = static_cast<int32_t>(out_zero_point);
  args.requant.qmin = static_cast<int32_t>(qmin);
  args.requant.qmax = static_cast<int32_t>(qmax);
  args.requant.rounding = parse_rounding(std::string(rounding), op);
  args.requant.out_type = out_dtype == at::kChar   ? cpu::OutType::kInt8
                          : out_dtype == at::kByte ? cpu::OutType::kUInt8
                                                   : cpu::OutType::kInt32;
  return call;
}

at::Tensor sparse24_int8_linear_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& values,
                                    const at::Tensor& meta, const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                    const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                    at::ScalarType out_dtype, c10::string_view rounding) {
  constexpr const char* op = "sparse24_int8_linear";
  const bool is_signed = check_int8_input(x, op, "x");
  check_dim(x, 2, op, "x");
  check_cpu(x, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  Sparse24Int8Call call = prepare_sparse24_int8(op, x.size(1), values, meta, bias, m0, shift, out_zero_point, qmin,
                                                qmax, out_dtype, rounding, "x");
  const at::Tensor xc = x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
  cpu::Sparse24Int8Args& args = call.args;
  args.x = xc.data_ptr();
  args.x_signed = is_signed;
  args.m = x.size(0);
  args.ldx = x.size(0) > 1 ? xc.stride(0) : x.size(1);
  args.x_zero_point = static_cast<int32_t>(x_zero_point);
  at::Tensor out = at::empty({x.size(0), args.w.n}, x.options().dtype(out_dtype));
  args.out = out.data_ptr();
  if (args.m == 0) return out;
  const cpu::Sparse24Int8Plan plan = cpu::sparse24_int8_plan(args.m, args.w.n, at::get_num_threads(), args.w.k);
  at::parallel_for(0, plan.tasks(), 1, [&](int64_t b, int64_t e) { cpu::sparse24_int8_run(args, plan, b, e); });
  return out;
}

// The geometry of a groups = 1 conv of x [N, C, H, W] (checked).
cpu::ConvGeometry conv_geometry(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, const char* op) {
  for (const auto& [name, v, lo] : {std::tuple<const char*, at::IntArrayRef, int64_t>{"kernel_size", kernel_size, 1},
                                    {"stride", stride, 1},
                                    {"padding", padding, 0},
                                    {"dilation", dilation, 1}}) {
    TORCH_CHECK(v.size() == 2 && v[0] >= lo && v[1] >= lo, op, ": ", name, " must be two integers >= ", lo, ", got ",
                v);
  }
  cpu::ConvGeometry g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.kh = kernel_size[0];
  g.kw = kernel_size[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  const int64_t span_h = g.dh * (g.kh - 1) + 1, span_w = g.dw * (g.kw - 1) + 1;
  g.oh = g.h + 2 * g.ph >= span_h ? (g.h + 2 * g.ph - span_h) / g.sh + 1 : 0;
  g.ow = g.w + 2 * g.pw >= span_w ? (g.w + 2 * g.pw - span_w) / g.sw + 1 : 0;
  TORCH_CHECK(g.oh > 0 && g.ow > 0, op, ": the kernel (", g.kh, "x", g.kw, ", dilation ", dilation,
              ") does not fit the padded input of ", x.sizes());
  return g;
}

// Bytes of gathered patches per chunk of rows (a thread's buffer, reused by every call).
constexpr int64_t kPatchChunkBytes = 256 * 1024;

// The row loop of a 2:4 conv: the conv's input rows (in weight_rows' K order) are gathered a chunk
// of whole tile_rows-row tiles at a time into the thread's buffer, and multiply(rows, first_row,
// count, threads) runs the 2:4 kernel on them against every column of the weight (with `threads`
// threads' worth of tasks), so the patches never exist all at once. When there are fewer chunks
// than threads (small images, batch 1), all rows are gathered once and the weight's columns are
// split between the threads instead.
template <typename T, typename Multiply>
void run_conv_rows(const T* x, const cpu::ConvGeometry& g, T pad_value, int64_t tile_rows, const Multiply& multiply) {
  const int64_t rows = g.rows(), k = g.k();
  const int64_t chunk =
      std::max<int64_t>(tile_rows, kPatchChunkBytes / (k * static_cast<int64_t>(sizeof(T))) / tile_rows * tile_rows);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const int64_t threads = at::get_num_threads();
  if (chunks < threads) {
    thread_local std::vector<T> all_rows;
    if (static_cast<int64_t>(all_rows.size()) < rows * k) all_rows.resize(rows * k);
    cpu::sparse24_gather_patches<T>(x, g, 0, rows, pad_value, all_rows.data());
    multiply(all_rows.data(), int64_t{0}, rows, threads);
    return;
  }
  at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<T> patches;
    if (static_cast<int64_t>(patches.size()) < chunk * k) patches.resize(chunk * k);
    for (int64_t c = b; c < e; ++c) {
      const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
      cpu::sparse24_gather_patches<T>(x, g, r0, r1, pad_value, patches.data());
      multiply(patches.data(), r0, r1 - r0, int64_t{1});
    }
  });
}

// tasks [0, count) of fn, on the calling thread (threads == 1) or spread with at::parallel_for.
template <typename Fn>
void run_tasks(int64_t count, int64_t threads, const Fn& fn) {
  if (threads > 1) {
    at::parallel_for(0, count, 1, fn);
  } else {
    fn(0, count);
  }
}

at::Tensor sparse24_int8_conv2d_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& values,
                                    const at::Tensor& meta, const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                    const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                    at::ScalarType out_dtype, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, c10::string_view rounding) {
  constexpr const char* op = "sparse24_int8_conv2d";
  const bool is_signed = check_int8_input(x, op, "x");
  check_dim(x, 4, op, "x");
  check_cpu(x, op, "x");
  check_zero_point_for(x, x_zero_point, op, "x_zero_point");
  const cpu::ConvGeometry g = conv_geometry(x, kernel_size, stride, padding, dilation, op);
  Sparse24Int8Call call = prepare_sparse24_int8(op, g.k(), values, meta, bias, m0, shift, out_zero_point, qmin, qmax,
                                                out_dtype, rounding, "the conv (kh * kw * in_channels)");
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.n, call.args.w.n, g.oh, g.ow},
                             x.options().dtype(out_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t rows = g.rows(), k = g.k();
  if (rows == 0) return out;
  cpu::Sparse24Int8Args base = call.args;
  base.x_signed = is_signed;
  base.x_zero_point = static_cast<int32_t>(x_zero_point);
  base.ldx = k;
  uint8_t* outp = static_cast<uint8_t*>(out.data_ptr());
  const int64_t elem = out.element_size();
  // int8 zero points pad with their two's complement byte
  run_conv_rows<uint8_t>(static_cast<const uint8_t*>(xc.data_ptr()), g, static_cast<uint8_t>(x_zero_point),
                         cpu::kS24I8TileRows, [&](const uint8_t* patches, int64_t r0, int64_t m, int64_t threads) {
                           cpu::Sparse24Int8Args args = base;
                           args.x = patches;
                           args.m = m;
                           args.out = outp + r0 * args.w.n * elem;
                           const cpu::Sparse24Int8Plan plan = cpu::sparse24_int8_plan(m, args.w.n, threads, args.w.k);
                           run_tasks(plan.tasks(), threads,
                                     [&](int64_t b, int64_t e) { cpu::sparse24_int8_run(args, plan, b, e); });
                         });
  return out;
}

at::Tensor sparse24_conv2d_cpu(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  constexpr const char* op = "sparse24_conv2d";
  check_dtype(x, at::kFloat, op, "x");
  check_dim(x, 4, op, "x");
  check_cpu(x, op, "x");
  const cpu::ConvGeometry g = conv_geometry(x, kernel_size, stride, padding, dilation, op);
  Sparse24F32Call call = prepare_sparse24_f32(op, g.k(), values, meta, bias, "the conv (kh * kw * in_channels)");
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.n, call.args.n, g.oh, g.ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t rows = g.rows(), k = g.k();
  if (rows == 0) return out;
  float* outp = out.data_ptr<float>();
  cpu::Sparse24F32Args base = call.args;
  base.ldx = k;
  run_conv_rows<float>(xc.data_ptr<float>(), g, 0.0f, cpu::kS24TileRows,
                       [&](const float* patches, int64_t r0, int64_t m, int64_t threads) {
                         cpu::Sparse24F32Args args = base;
                         args.x = patches;
                         args.m = m;
                         args.out = outp + r0 * args.n;
                         const cpu::Sparse24Plan plan = cpu::sparse24_f32_plan(m, args.n);
                         run_tasks(plan.tasks(), threads,
                                   [&](int64_t b, int64_t e) { cpu::sparse24_f32_run(args, plan, b, e); });
                       });
  return out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("sparse24_compress", &ck::ops::sparse24_compress_cpu);
  m.impl("sparse24_decompress", &ck::ops::sparse24_decompress_cpu);
  m.impl("sparse24_f32_pack", &ck::ops::sparse24_f32_pack_cpu);
  m.impl("sparse24_bf16_pack", &ck::ops::sparse24_bf16_pack_cpu);
  m.impl("sparse24_linear", &ck::ops::sparse24_linear_cpu);
  m.impl("sparse24_int8_pack", &ck::ops::sparse24_int8_pack_cpu);
  m.impl("sparse24_int8_linear", &ck::ops::sparse24_int8_linear_cpu);
  m.impl("sparse24_int8_conv2d", &ck::ops::sparse24_int8_conv2d_cpu);
  m.impl("sparse24_conv2d", &ck::ops::sparse24_conv2d_cpu);
}
