// CPU glue of the 2:4 sparse ops: argument checks, output allocation, threading. The kernels are
// torch-free (csrc/cpu/sparse24*.{h,cpp}); the layout is documented in csrc/include/ck/sparse24.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cpu/isa.h"
#include "../cpu/sparse24.h"
#include "checks.h"
#include "packed_checks.h"
#include "sparse24_checks.h"

namespace ck::ops {
namespace {

std::tuple<at::Tensor, at::Tensor> sparse24_compress_cpu(const at::Tensor& w) {
  constexpr const char* op = "sparse24_compress";
  check_sparse24_dense(w, op);
  check_cpu(w, op, "w");
  const int64_t n = w.size(0), k = w.size(1);
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

// Every nibble of meta (checked [N, ceil(K/8)] by check_sparse24_compressed) is a valid 2:4 pattern.
void check_meta_nibbles(const at::Tensor& meta, int64_t n, int64_t k, const char* op) {
  check_cpu(meta, op, "meta");
  const at::Tensor mc = meta.contiguous();
  const int64_t bad = cpu::sparse24_check_meta(mc.data_ptr<uint8_t>(), n, k);
  TORCH_CHECK(bad < 0, op, ": meta is not a valid 2:4 metadata: row ", bad / (k / 4), ", group ", bad % (k / 4),
              " has a nibble whose two positions are not increasing (or a non-zero padding nibble)");
}

at::Tensor sparse24_decompress_cpu(const at::Tensor& values, const at::Tensor& meta) {
  constexpr const char* op = "sparse24_decompress";
  const int64_t k = check_sparse24_compressed(values, meta, op).expect_int();
  check_cpu(values, op, "values");
  check_meta_nibbles(meta, values.size(0), k, op);
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
  const auto [n, k] = check_sparse24_pack(values, meta, dtype, op);
  check_cpu(values, op, "values");
  check_meta_nibbles(meta, n, k, op);
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

// The 1-D pack the kernels read and what its header says, for a weight already checked by
// check_sparse24_weight (which filled `info` when values is a pack): values itself, or the pack of
// values and meta made for this call by pack(values, meta).
template <typename Pack>
std::pair<at::Tensor, PackedInfo> packed_for_call(const at::Tensor& values, const at::Tensor& meta, PackedFamily f,
                                                  const PackedInfo& info, const Pack& pack, const char* op) {
  if (values.dim() == 1) return {values, info};
  at::Tensor packed = pack(values, meta);
  return {packed, check_packed(packed, f, PackedExpect{}, op, "values")};
}

// The CPU arguments of the int8 2:4 ops.
void check_cpu_args(const at::Tensor& x, const at::Tensor& values, const at::Tensor& m0, const at::Tensor& shift,
                    const char* op) {
  check_cpu(x, op, "x");
  check_cpu(values, op, "values");
  check_cpu(m0, op, "m0");
  check_cpu(shift, op, "shift");
}

// The weight and bias of an fp32 2:4 op whose input rows hold K values: checked and filled into
// args (x, m, ldx and out are the caller's).
struct Sparse24F32Call {
  at::Tensor packed, bias;
  cpu::Sparse24F32Args args;
};

// values / meta / bias checked (check_sparse24_linear or check_sparse24_weight + check_bias; info:
// the header of values when it is a pack).
Sparse24F32Call prepare_sparse24_f32(const char* op, const at::Tensor& values, const at::Tensor& meta,
                                     const std::optional<at::Tensor>& bias, const PackedInfo& checked) {
  Sparse24F32Call call;
  check_cpu(values, op, "values");
  PackedInfo info;
  std::tie(call.packed, info) =
      packed_for_call(values, meta, PackedFamily::kSparse24F32, checked, sparse24_f32_pack_cpu, op);
  const float* payload = packed_payload<float>(call.packed, info);
  int64_t n = 0, k = 0;
  cpu::sparse24_f32_packed_shape(payload, call.packed.numel() - info.header_elements, &n, &k);
  TORCH_CHECK(n == info.n && k == info.k, op, ": the trailer of the sparse24_f32_pack payload (N=", n, ", K=", k,
              ") contradicts its header (N=", info.n, ", K=", info.k, "): repack it with sparse24_f32_pack");
  if (bias.has_value()) {
    check_cpu(*bias, op, "bias");
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
                                const std::optional<at::Tensor>& bias, const PackedInfo& checked) {
  constexpr const char* op = "sparse24_linear";
  const auto [packed, info] =
      packed_for_call(values, meta, PackedFamily::kSparse24Bf16, checked, sparse24_bf16_pack_cpu, op);
  cpu::Sparse24Bf16Args args;
  args.packed = reinterpret_cast<const uint16_t*>(packed_payload<at::BFloat16>(packed, info));
  cpu::sparse24_bf16_packed_shape(args.packed, packed.numel() - info.header_elements, &args.n, &args.k);
  TORCH_CHECK(args.n == info.n && args.k == info.k, op, ": the trailer of the sparse24_bf16_pack payload (N=", args.n,
              ", K=", args.k, ") contradicts its header (N=", info.n, ", K=", info.k,
              "): repack it with sparse24_bf16_pack");
  at::Tensor bias_f32;
  if (bias.has_value()) {
    check_cpu(*bias, op, "bias");
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
  if (cpu::sparse24_bf16_uses_tiles(m)) {  // (sparse24.h, "bf16 on tiles")
    const cpu::Int8GemmPlan plan = cpu::amx_bf16_plan(m, args.n, at::get_num_threads());
    at::parallel_for(0, plan.tasks(), 1, [&](int64_t b, int64_t e) { cpu::sparse24_bf16_tiles_run(args, plan, b, e); });
    return out;
  }
  const cpu::Sparse24Bf16Plan plan = cpu::sparse24_int8_plan(m, args.n, at::get_num_threads());
  at::parallel_for(0, plan.tasks(), 1, [&](int64_t b, int64_t e) { cpu::sparse24_bf16_run(args, plan, b, e); });
  return out;
}

at::Tensor sparse24_linear_cpu(const at::Tensor& x, const at::Tensor& values, const at::Tensor& meta,
                               const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "sparse24_linear";
  check_cpu(x, op, "x");
  check_cpu(values, op, "values");
  PackedInfo info;
  check_sparse24_linear(x, values, meta, bias, op, &info);
  if (x.scalar_type() == at::kBFloat16) return sparse24_bf16_linear(x, values, meta, bias, info);
  Sparse24F32Call call = prepare_sparse24_f32(op, values, meta, bias, info);
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

// Arguments checked by check_sparse24_int8 (checked: the header of values when it is a pack).
Sparse24Int8Call prepare_sparse24_int8(const char* op, const at::Tensor& values, const at::Tensor& meta,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& m0,
                                       const at::Tensor& shift, int64_t out_zero_point, int64_t qmin, int64_t qmax,
                                       at::ScalarType out_dtype, c10::string_view rounding, const PackedInfo& checked) {
  Sparse24Int8Call call;
  PackedInfo info;
  std::tie(call.packed, info) =
      packed_for_call(values, meta, PackedFamily::kSparse24Int8, checked, sparse24_int8_pack_cpu, op);
  const cpu::PackedSparse24Int8 w = cpu::sparse24_int8_packed_view(packed_payload<int32_t>(call.packed, info),
                                                                   call.packed.numel() - info.header_elements);
  TORCH_CHECK(w.n == info.n && w.k == info.k, op, ": the trailer of the sparse24_int8_pack payload (N=", w.n,
              ", K=", w.k, ") contradicts its header (N=", info.n, ", K=", info.k,
              "): repack it with sparse24_int8_pack");
  const bool per_channel = m0.numel() > 1;
  if (bias.has_value()) {
    check_cpu(*bias, op, "bias");
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
  check_dim(x, 2, op, "x");
  check_cpu_args(x, values, m0, shift, op);
  PackedInfo info;
  check_sparse24_int8(x, x_zero_point, x.size(1), "x", values, meta, bias, m0, shift, out_zero_point, qmin, qmax,
                      out_dtype, rounding, op, &info);
  const bool is_signed = x.scalar_type() == at::kChar;
  Sparse24Int8Call call =
      prepare_sparse24_int8(op, values, meta, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding, info);
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

// The geometry of a groups = 1 conv of x [N, C, H, W] (checked by check_sparse24_conv).
cpu::ConvGeometry conv_geometry(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
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
  g.oh = (g.h + 2 * g.ph - span_h) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - span_w) / g.sw + 1;
  return g;
}

// Bytes of gathered patches per chunk of rows (a thread's buffer, reused by every call).
constexpr int64_t kPatchChunkBytes = 256 * 1024;

// The row loop of a 2:4 conv: the conv's input rows (in weight_rows' K order) are gathered a chunk
// of whole tile_rows-row tiles at a time into the thread's buffer, and multiply(rows, first_row,
// count, threads) runs the 2:4 kernel on them against every column of the weight (with `threads`
// threads' worth of tasks), so the patches never exist all at once. When there are fewer chunks
// than threads (small images, batch 1), all rows are gathered once and the weight's columns are
// split between the threads instead. A conv below 2^22 dense multiply-adds (rows x n x k) runs on the
// calling thread: waking the others costs more than its few microseconds of work (ResNet-18 width 8
// at batch 1: every conv), and on a busy machine much more.
template <typename T, typename Multiply>
void run_conv_rows(const T* x, const cpu::ConvGeometry& g, int64_t n, T pad_value, int64_t tile_rows,
                   const Multiply& multiply) {
  const int64_t rows = g.rows(), k = g.k();
  const int64_t chunk =
      std::max<int64_t>(tile_rows, kPatchChunkBytes / (k * static_cast<int64_t>(sizeof(T))) / tile_rows * tile_rows);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const int64_t threads = rows * n * k < (int64_t{1} << 22) ? 1 : at::get_num_threads();
  if (chunks < threads || threads == 1) {
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
  const Sparse24ConvShape shape = check_sparse24_conv(x, kernel_size, stride, padding, dilation, op);
  check_cpu_args(x, values, m0, shift, op);
  PackedInfo info;
  check_sparse24_int8(x, x_zero_point, shape.k, "the conv (kh * kw * in_channels)", values, meta, bias, m0, shift,
                      out_zero_point, qmin, qmax, out_dtype, rounding, op, &info);
  const bool is_signed = x.scalar_type() == at::kChar;
  const cpu::ConvGeometry g = conv_geometry(x, kernel_size, stride, padding, dilation);
  Sparse24Int8Call call =
      prepare_sparse24_int8(op, values, meta, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, rounding, info);
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
  run_conv_rows<uint8_t>(static_cast<const uint8_t*>(xc.data_ptr()), g, base.w.n, static_cast<uint8_t>(x_zero_point),
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
  const Sparse24ConvShape shape = check_sparse24_conv(x, kernel_size, stride, padding, dilation, op);
  check_cpu(x, op, "x");
  check_cpu(values, op, "values");
  PackedInfo info;
  const int64_t n = check_sparse24_weight(values, meta, PackedFamily::kSparse24F32, at::kFloat, shape.k,
                                          "the conv (kh * kw * in_channels)",
                                          "float32 [N, K/2] or sparse24_f32_pack's packed tensor", op, &info);
  check_bias(bias, at::kFloat, n, op);
  const cpu::ConvGeometry g = conv_geometry(x, kernel_size, stride, padding, dilation);
  Sparse24F32Call call = prepare_sparse24_f32(op, values, meta, bias, info);
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({g.n, call.args.n, g.oh, g.ow}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t rows = g.rows(), k = g.k();
  if (rows == 0) return out;
  float* outp = out.data_ptr<float>();
  cpu::Sparse24F32Args base = call.args;
  base.ldx = k;
  run_conv_rows<float>(xc.data_ptr<float>(), g, base.n, 0.0f, cpu::kS24TileRows,
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
