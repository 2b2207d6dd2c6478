// CPU glue of the codebook (k-means weight sharing) ops: argument checks, allocation, threading.
// Kernels: csrc/cpu/codebook*.cpp; packed layout: csrc/include/ck/bitpack.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../cpu/codebook.h"
#include "checks.h"
#include "codebook_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

namespace bp = ck::bitpack;

at::Tensor codebook_pack_cpu(const at::Tensor& idx, int64_t bits) {
  constexpr const char* op = "codebook_pack";
  check_cpu(idx, op, "idx");
  check_codebook_idx(idx, bits, op);
  const int64_t n = idx.size(0), k = idx.size(1);
  const at::Tensor u8 = idx.to(at::kByte).contiguous();
  at::Tensor packed = new_packed(PackedFamily::kCodebook, n, k, bits, idx.options(), op);
  int32_t* payload = packed.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kCodebook, packed.size(1));
  cpu::codebook_pack(u8.data_ptr<uint8_t>(), n, k, k, static_cast<int>(bits), reinterpret_cast<uint32_t*>(payload));
  return packed;
}

const uint32_t* payload_words(const at::Tensor& packed, const PackedInfo& info) {
  return reinterpret_cast<const uint32_t*>(packed_payload<int32_t>(packed, info));
}

at::Tensor codebook_unpack_cpu(const at::Tensor& packed, int64_t bits, int64_t k) {
  constexpr const char* op = "codebook_unpack";
  check_cpu(packed, op, "packed_idx");
  const PackedInfo info = check_codebook_unpack(packed, bits, k, op);
  const int64_t n = info.n;
  at::Tensor idx = at::empty({n, k}, packed.options().dtype(at::kByte));
  cpu::codebook_unpack(payload_words(packed, info), n, k, static_cast<int>(bits), idx.data_ptr<uint8_t>());
  return idx;
}

at::Tensor codebook_decode_cpu(const at::Tensor& packed, const at::Tensor& codebook, int64_t bits, int64_t k) {
  constexpr const char* op = "codebook_decode";
  check_cpu(packed, op, "packed_idx");
  check_cpu(codebook, op, "codebook");
  const PackedInfo info = check_codebook_decode(packed, codebook, bits, k, op);
  const int64_t n = info.n, group_rows = n / codebook.size(0);
  const at::Tensor cb = codebook.contiguous();
  at::Tensor w = at::empty({n, k}, codebook.options());
  const uint32_t* words = payload_words(packed, info);
  const float* cbp = cb.data_ptr<float>();
  float* wp = w.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, 65536 / k), [&](int64_t begin, int64_t end) {
    cpu::codebook_decode_rows(words, n, k, static_cast<int>(bits), cbp, group_rows, begin, end, wp);
  });
  return w;
}

// The weight part of args from checked weight operands (info: what packed's header says).
void prepare_weight(const at::Tensor& packed, const PackedInfo& info, const at::Tensor& codebook, int64_t bits,
                    const std::optional<at::Tensor>& bias, int64_t k, at::Tensor& cb_holder, at::Tensor& bias_holder,
                    cpu::CodebookLinearArgs& args) {
  const int64_t n = info.n, group_rows = n / codebook.size(0);
  cb_holder = codebook.contiguous();
  args.packed = payload_words(packed, info);
  args.n = n;
  args.kw = packed.size(1);
  args.bits = static_cast<int>(bits);
  args.codebook = cb_holder.data_ptr<float>();
  args.group_rows = group_rows;
  args.k = k;
  if (bias.has_value()) {
    bias_holder = bias->contiguous();
    args.bias = bias_holder.data_ptr<float>();
  }
}

void run(const cpu::CodebookLinearArgs& args) {
  if (args.m == 0 || args.n_end <= args.n_begin) return;
  const cpu::CodebookPlan plan = cpu::codebook_plan(args, at::get_num_threads());
  // Below ~1M multiply-adds (a few tens of microseconds) waking the other threads costs more than
  // it saves, so small problems (batch-1 convs, tiny layers) run on the calling thread.
  const int64_t work = args.m * (args.n_end - args.n_begin) * args.k;
  const int64_t grain = work < (int64_t{1} << 20) ? plan.tasks() : 1;
  at::parallel_for(0, plan.tasks(), grain,
                   [&](int64_t begin, int64_t end) { cpu::codebook_linear_run(args, plan, begin, end); });
}

// A contiguous bf16 copy of t with every subnormal replaced by a zero of its sign (what tdpbf16ps reads), plus
// `pad` zero elements at the end.
at::Tensor bf16_flushed(const at::Tensor& t, int64_t pad) {
  const at::Tensor src = t.to(at::kBFloat16).contiguous();
  at::Tensor out = at::zeros({src.numel() + pad}, src.options());
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src.data_ptr());
  uint16_t* d = reinterpret_cast<uint16_t*>(out.data_ptr());
  for (int64_t i = 0; i < src.numel(); ++i) d[i] = (s[i] & 0x7f80u) == 0 ? (s[i] & 0x8000u) : s[i];
  return out;
}

// The fp32 values of a bf16 tensor, subnormals flushed to a zero of their sign, in one pass (contiguous, t's shape).
at::Tensor widened_flushed(const at::Tensor& t) {
  const at::Tensor src = t.contiguous();
  at::Tensor out = at::empty(src.sizes(), src.options().dtype(at::kFloat));
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src.data_ptr());
  uint32_t* d = reinterpret_cast<uint32_t*>(out.data_ptr());
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) {  // branch-free: the compiler vectorizes it
    const uint32_t h = s[i];
    d[i] = ((h & 0x7f80u) == 0 ? (h & 0x8000u) : h) << 16;
  }
  return out;
}

// float_to_bf16 over a contiguous fp32 tensor, branch-free (vectorized) in one pass.
at::Tensor rounded_bf16(const at::Tensor& y32) {
  at::Tensor y = at::empty(y32.sizes(), y32.options().dtype(at::kBFloat16));
  const uint32_t* src = reinterpret_cast<const uint32_t*>(y32.data_ptr<float>());
  uint16_t* dst = reinterpret_cast<uint16_t*>(y.data_ptr());
  const int64_t n = y32.numel();
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = src[i];
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    dst[i] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
  }
  return y;
}

at::Tensor codebook_linear_fp32(const at::Tensor& x, const at::Tensor& packed_idx, const PackedInfo& info,
                                const at::Tensor& codebook, int64_t bits, const std::optional<at::Tensor>& bias);

// bf16 x (codebook.h, "bf16 activations"): the tile kernel where codebook_bf16_uses_tiles, else the fp32 kernel on
// x widened and the codebook rounded (subnormals flushed in both), rounded to bf16 at the end.
at::Tensor codebook_linear_bf16(const at::Tensor& x, const at::Tensor& packed_idx, const PackedInfo& info,
                                const at::Tensor& codebook, int64_t bits, const std::optional<at::Tensor>& bias) {
  const int64_t m = x.size(0), k = x.size(1), n = info.n;
  if (!cpu::codebook_bf16_uses_tiles(m, static_cast<int>(bits), n / codebook.size(0))) {
    const at::Tensor cb = widened_flushed(codebook.to(at::kBFloat16));
    // rounded by rounded_bf16 rather than .to(kBFloat16), which keeps a NaN's sign and payload: every NaN is 0x7FC0
    return rounded_bf16(codebook_linear_fp32(widened_flushed(x), packed_idx, info, cb, bits, bias));
  }
  const at::Tensor table = bf16_flushed(codebook, 2);  // two more entries: see Avx512CodebookDecode
  const at::Tensor xc = x.stride(1) == 1 && (m <= 1 || x.stride(0) >= k) ? x : x.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  cpu::CodebookBf16Args args;
  args.x = reinterpret_cast<const uint16_t*>(xc.data_ptr());
  args.m = m;
  args.k = k;
  args.ldx = m > 1 ? xc.stride(0) : k;
  args.packed = payload_words(packed_idx, info);
  args.n = n;
  args.kw = packed_idx.size(1);
  args.bits = static_cast<int>(bits);
  args.codebook = reinterpret_cast<const uint16_t*>(table.data_ptr());
  args.group_rows = n / codebook.size(0);
  args.bias = bias.has_value() ? bias_c.data_ptr<float>() : nullptr;
  args.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  const cpu::Int8GemmPlan plan = cpu::amx_bf16_plan(m, n, at::get_num_threads());
  // (as in run: below ~1M multiply-adds the other threads cost more than they save)
  const int64_t grain = m * n * k < (int64_t{1} << 20) ? plan.tasks() : 1;
  at::parallel_for(0, plan.tasks(), grain,
                   [&](int64_t begin, int64_t end) { cpu::codebook_bf16_run(args, plan, begin, end); });
  return out;
}

at::Tensor codebook_linear_cpu(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                               int64_t bits, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "codebook_linear";
  check_cpu(x, op, "x");
  check_cpu(packed_idx, op, "packed_idx");
  const PackedInfo info = check_codebook_linear(x, packed_idx, codebook, bits, bias, op);
  if (x.scalar_type() == at::kBFloat16) return codebook_linear_bf16(x, packed_idx, info, codebook, bits, bias);
  return codebook_linear_fp32(x, packed_idx, info, codebook, bits, bias);
}

at::Tensor codebook_linear_fp32(const at::Tensor& x, const at::Tensor& packed_idx, const PackedInfo& info,
                                const at::Tensor& codebook, int64_t bits, const std::optional<at::Tensor>& bias) {
  cpu::CodebookLinearArgs args;
  at::Tensor cb_holder, bias_holder;
  prepare_weight(packed_idx, info, codebook, bits, bias, x.size(1), cb_holder, bias_holder, args);
  const at::Tensor xc = x.stride(1) == 1 && (x.size(0) <= 1 || x.stride(0) >= x.size(1)) ? x : x.contiguous();
  at::Tensor out = at::empty({x.size(0), args.n}, x.options());
  args.x = xc.data_ptr<float>();
  args.m = x.size(0);
  args.ldx = x.size(0) > 1 ? xc.stride(0) : x.size(1);
  args.out = out.data_ptr<float>();
  args.ldo = args.n;
  args.n_begin = 0;
  args.n_end = args.n;
  run(args);
  return out;
}

at::Tensor codebook_conv2d_cpu(const at::Tensor& x, const at::Tensor& packed_idx, const at::Tensor& codebook,
                               int64_t bits, const std::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  constexpr const char* op = "codebook_conv2d";
  check_cpu(x, op, "x");
  check_cpu(packed_idx, op, "packed_idx");
  PackedInfo info;
  const CodebookConvShape s = check_codebook_conv2d(x, packed_idx, codebook, bits, bias, kernel_size, stride, padding,
                                                    dilation, groups, info, op);
  const auto &ks = s.ks, &st = s.st, &pd = s.pd, &dl = s.dl;
  const int64_t batch = s.batch.expect_int(), h = s.h.expect_int(), w = s.w.expect_int();
  const int64_t ho = s.ho.expect_int(), wo = s.wo.expect_int(), channels = s.channels;
  const int64_t out_channels = s.out_channels, per_group = s.per_group, k = s.k;
  cpu::CodebookLinearArgs args;
  at::Tensor cb_holder, bias_holder;
  prepare_weight(packed_idx, info, codebook, bits, bias, k, cb_holder, bias_holder, args);
  // im2col into rows of x for the linear kernel (one row per output pixel, columns in the (c, i, j)
  // order of the weight's [C/groups, kh, kw] flattening).
  const at::Tensor xc = x.contiguous();
  const cpu::Im2colShape shape{batch, channels, h, w, ks[0], ks[1], st[0], st[1], pd[0], pd[1], dl[0], dl[1], ho, wo};
  at::Tensor cols = at::empty({batch * ho * wo, channels * ks[0] * ks[1]}, x.options());
  const float* xp = xc.data_ptr<float>();
  float* cp = cols.data_ptr<float>();
  // (the copy of a small image is not worth waking the other threads: the grain keeps up to 64K
  // copied floats on the calling thread)
  const int64_t row_floats = std::max<int64_t>(channels * ks[0] * ks[1], 1);
  at::parallel_for(0, batch * ho * wo, std::max<int64_t>(64, (int64_t{1} << 16) / row_floats),
                   [&](int64_t begin, int64_t end) { cpu::codebook_im2col(xp, shape, begin, end, cp); });
  const int64_t rows = batch * ho * wo, row_len = channels * ks[0] * ks[1];
  at::Tensor out = at::empty({batch, ho, wo, out_channels}, x.options());
  args.m = rows;
  args.ldx = row_len;
  args.out = out.data_ptr<float>();
  args.ldo = out_channels;
  for (int64_t g = 0; g < groups; ++g) {
    args.x = cols.data_ptr<float>() + g * k;
    args.n_begin = g * per_group;
    args.n_end = (g + 1) * per_group;
    run(args);
  }
  return out.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("codebook_pack", &ck::ops::codebook_pack_cpu);
  m.impl("codebook_unpack", &ck::ops::codebook_unpack_cpu);
  m.impl("codebook_decode", &ck::ops::codebook_decode_cpu);
  m.impl("codebook_linear", &ck::ops::codebook_linear_cpu);
  m.impl("codebook_conv2d", &ck::ops::codebook_conv2d_cpu);
}
