// CPU glue for int8_conv2d: checks, layout (channels_last), the work split, and the fast paths
// (1x1 as a plain GEMM, depthwise as a direct kernel). Kernels live in csrc/cpu/int8_conv.*.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "../cpu/amx_tiles.h"
#include "../cpu/int8_conv.h"
#include "../cpu/int8_gemm.h"
#include "../cpu/isa.h"
#include "checks.h"
#include "int8_checks.h"
#include "packed_checks.h"

namespace ck::ops {
namespace {

// [OC, Cg, KH, KW] -> per group g, int8_pack_weight's payload of w[g*OCg:(g+1)*OCg] permuted to
// (o, kh, kw, c), stacked along dim 0 after the header rows: int32
// [header_rows + OC, int8_packed_words_per_row(KH * KW * Cg)] (ck/packed_header.h).
at::Tensor pack_conv_weight(const at::Tensor& w, int64_t groups, const char* op) {
  const int64_t oc = w.size(0), ocg = oc / groups, depth = w.size(1) * w.size(2) * w.size(3);
  const at::Tensor rows = w.permute({0, 2, 3, 1}).contiguous().reshape({oc, depth});
  at::Tensor packed = new_packed(PackedFamily::kInt8Conv2d, oc, depth, groups, w.options(), op);
  const int64_t words = packed.size(1);
  int32_t* payload = packed.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kInt8Conv2d, words);
  for (int64_t g = 0; g < groups; ++g) {
    cpu::int8_pack_weight(rows.data_ptr<int8_t>() + g * ocg * depth, ocg, depth, depth, payload + g * ocg * words);
  }
  return packed;
}

// Whether a conv of `rows` output pixels, `oc` channels and GEMM depth `depth` runs on the calling
// thread: below 2^22 multiply-adds (a few microseconds of AMX or VNNI work) waking the other
// threads costs more than it saves, and on a busy machine much more (a descheduled worker delays
// the whole op). ResNet-18 width 8 at batch 1: every conv is below it.
bool run_on_calling_thread(int64_t rows, int64_t oc, int64_t depth) { return rows * oc * depth < (int64_t{1} << 22); }

at::Tensor int8_conv2d_pack_weight_cpu(const at::Tensor& w, int64_t groups) {
  constexpr const char* op = "int8_conv2d_pack_weight";
  check_int8_conv_weight(w, groups, op);
  check_cpu(w, op, "w");
  return pack_conv_weight(w, groups, op);
}

at::Tensor int8_conv2d_cpu(const at::Tensor& x, int64_t x_zero_point, const at::Tensor& w,
                           const std::optional<at::Tensor>& bias, const at::Tensor& m0, const at::Tensor& shift,
                           int64_t out_zero_point, int64_t qmin, int64_t qmax, at::ScalarType out_dtype,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           c10::string_view rounding, const std::optional<at::Tensor>& w_packed) {
  constexpr const char* op = "int8_conv2d";
  for (const auto& [t, name] :
       {std::pair<const at::Tensor&, const char*>{x, "x"}, {w, "w"}, {m0, "m0"}, {shift, "shift"}}) {
    check_cpu(t, op, name);
  }
  if (bias.has_value()) check_cpu(*bias, op, "bias");
  if (w_packed.has_value()) check_cpu(*w_packed, op, "w_packed");
  // Every argument check (shared with the CUDA glue and the Meta kernel), the pack's header included.
  const Int8ConvGeometry geometry =
      check_int8_conv2d(x, x_zero_point, w, bias, m0, shift, out_zero_point, qmin, qmax, out_dtype, stride, padding,
                        dilation, groups, rounding, w_packed, op);
  const bool x_signed = geometry.x_signed, per_channel = geometry.per_channel;
  cpu::Int8ConvShape s;
  s.batch = x.size(0), s.in_channels = x.size(1), s.height = x.size(2), s.width = x.size(3);
  s.out_channels = w.size(0), s.kernel_h = w.size(2), s.kernel_w = w.size(3);
  s.stride_h = stride[0], s.stride_w = stride[1], s.pad_h = padding[0], s.pad_w = padding[1];
  s.dilation_h = dilation[0], s.dilation_w = dilation[1], s.groups = groups;
  const int64_t oc = s.out_channels, ocg = s.group_out();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  const at::Tensor m0c = m0.contiguous(), shiftc = shift.contiguous();
  at::Tensor out = at::empty({s.batch, oc, s.out_h(), s.out_w()},
                             x.options().dtype(out_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  if (s.batch == 0) return out;
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);

  cpu::Int8GemmArgs base;
  base.x_signed = x_signed;
  base.x_zero_point = static_cast<int32_t>(x_zero_point);
  base.kind = cpu::EpilogueKind::kRequantize;
  base.requant = requant_params(m0c, shiftc, per_channel, out_zero_point, qmin, qmax, out_dtype, rounding, op);
  base.bias_i32 = bias_c.defined() ? bias_c.data_ptr<int32_t>() : nullptr;
  base.ldo = oc;
  const int64_t rows = s.rows();
  // A small conv runs on the calling thread, planned for one (run_on_calling_thread).
  const bool inline_run = run_on_calling_thread(rows, s.out_channels, s.group_depth());
  const int64_t threads = inline_run ? 1 : at::get_num_threads();
  auto run_tasks = [inline_run](int64_t tasks, const auto& f) {
    if (inline_run) {
      f(int64_t{0}, tasks);
    } else {
      at::parallel_for(0, tasks, 1, f);
    }
  };
  const int64_t out_elem = out.element_size();
  char* out_bytes = static_cast<char*>(out.data_ptr());

  // A given w_packed was validated above even where the depthwise kernel reads w instead, so that a
  // pack that does not belong to w is never silently accepted.
  const at::Tensor w_packed_checked = w_packed.has_value() ? *w_packed : at::Tensor();

  // Depthwise: one input channel per output channel; a GEMM would waste 15 of 16 lanes.
  if (groups == s.in_channels && ocg == 1) {
    const at::Tensor w_dw = w.reshape({oc, s.kernel_h * s.kernel_w}).contiguous();
    base.out = out.data_ptr();
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(oc, 1));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      cpu::int8_conv_depthwise_rows(xc.data_ptr(), x_signed, base.x_zero_point, w_dw.data_ptr<int8_t>(), s, base, begin,
                                    end);
    });
    return out;
  }

  const int64_t depth = s.group_depth();
  const int64_t words = cpu::int8_packed_words_per_row(depth);
  const at::Tensor packed = w_packed_checked.defined() ? w_packed_checked : pack_conv_weight(w, groups, op);
  const int32_t* packed_ptr =
      packed.data_ptr<int32_t>() + packed_header_elements(PackedFamily::kInt8Conv2d, packed.size(1));
  auto group_args = [&](int64_t g) {
    cpu::Int8GemmArgs a = base;
    a.w = cpu::int8_packed_view(packed_ptr + g * ocg * words, ocg, words);
    TORCH_CHECK(a.w.k == depth, op, ": w_packed was built for depth ", a.w.k, " but the conv has depth ", depth);
    if (a.bias_i32 != nullptr) a.bias_i32 += g * ocg;
    if (per_channel) {
      a.requant.m0 += g * ocg;
      a.requant.shift += g * ocg;
    }
    return a;
  };

  if (s.is_pointwise()) {  // NHWC activations are already the [rows, C] GEMM operand
    cpu::Int8GemmArgs a = group_args(0);
    a.x = xc.data_ptr();
    a.m = rows;
    a.ldx = s.in_channels;
    a.out = out_bytes;
    const cpu::Int8GemmPlan plan = cpu::int8_gemm_plan(rows, oc, threads, depth);
    run_tasks(plan.tasks(), [&](int64_t b, int64_t e) { cpu::int8_gemm_run(a, plan, b, e); });
    return out;
  }

  // Direct conv on AMX (VirtualConvRows): the input once into a zero-point-padded image, then every
  // tap of a row tile is one tile load from it; no gathered rows. It computes the padding's rows and
  // columns too, so it runs while at least half of its rows are output pixels (ResNet-18 at 32x32:
  // 89% for layer1, 79% at 16x16 and 64% at 8x8, all faster than gathering; 44% at 4x4, where the
  // gathered GEMM is 1.3x faster; Sapphire Rapids, batch 32). Strided convs gather. Two direct forms
  // of them were measured and not kept: the padded input split into stride x stride planes (the
  // pixel-by-pixel copy into the planes costs more than the gather saves: layer4.0.conv1 at batch 32,
  // 469 vs 321 us), and GEMM row v read at padded pixel stride * v with the grid rows between outputs
  // dropped (3x3 / 2: 1.2-2x slower; 1x1 / 2 read in place: the same time as the gather).
  // Narrow inputs (C < 64, undilated columns): one kernel row's KW taps are KW * C contiguous bytes
  // of the padded image, read as ceil(KW * C / 64) tile chunks of 64 bytes; the weight is repacked
  // per call with those chunks' K layout, zero past the KW * C real bytes of each, so the bytes a
  // chunk reads beyond its kernel row (neighbouring pixels) contribute exactly 0 and the row sums,
  // hence the zero-point correction and the integers, are those of the dense weight. This trades
  // up to 7x more tile multiplies (C = 3: 27 -> 192 bytes of K) for no gather at all. Measured
  // (Sapphire Rapids, 1 thread, CPU time), ResNet-18 width 8 at 32x32, 8 -> 8 channels: 29 us against
  // 59 us gathered at batch 1, 430 against 1300 us at batch 32; 16 -> 16 at 16x16, batch 32: 127 us
  // against 290 on VNNI. Below 1024 output pixels the per-call repack costs more than the gather
  // saves (32 -> 32 at 8x8, batch 1: 29 us against 13 us gathered), so those gather.
  const int64_t padded_pixels = (s.height + 2 * s.pad_h) * (s.width + 2 * s.pad_w);
  const int64_t c_in = s.in_channels, row_bytes = s.kernel_w * c_in;
  const bool wide_direct = c_in % 64 == 0;
  const bool narrow_direct = c_in < 64 && s.dilation_w == 1 && rows >= 1024;
  if (s.groups == 1 && s.stride_h == 1 && s.stride_w == 1 && (wide_direct || narrow_direct) &&
      2 * s.out_h() * s.out_w() >= padded_pixels && cpu::int8_gemm_uses_amx(rows, oc, depth)) {
    cpu::VirtualConvRows grid;
    grid.images = s.batch;
    grid.hp = s.height + 2 * s.pad_h;
    grid.wp = s.width + 2 * s.pad_w;
    grid.out_h = s.out_h();
    grid.out_w = s.out_w();
    const int64_t c = c_in, m = (grid.rows() + 31) / 32 * 32;
    // Byte offsets of the K chunks in a row of the padded image, and the direct weight's depth.
    std::vector<int64_t> a_offsets;
    const int64_t row_chunks = (row_bytes + 63) / 64;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      if (wide_direct) {
        for (int64_t kw = 0; kw < s.kernel_w; ++kw)
          for (int64_t cc = 0; cc < c; cc += 64)
            a_offsets.push_back((kh * s.dilation_h * grid.wp + kw * s.dilation_w) * c + cc);
      } else {
        for (int64_t j = 0; j < row_chunks; ++j) a_offsets.push_back(kh * s.dilation_h * grid.wp * c + j * 64);
      }
    }
    const int64_t direct_depth = static_cast<int64_t>(a_offsets.size()) * 64;
    // Every byte a tile load can read: row v reads [v * c + offset, + 64) for v < m.
    const int64_t buffer_bytes = (m - 1) * c + a_offsets.back() + 64;
    thread_local std::vector<uint8_t> padded;
    if (padded.size() < static_cast<size_t>(buffer_bytes)) padded.resize(buffer_bytes);
    const uint8_t zp_byte = static_cast<uint8_t>(x_zero_point & 0xFF);
    const uint8_t* src = static_cast<const uint8_t*>(xc.data_ptr());
    uint8_t* dst = padded.data();
    auto pad_rows = [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t img = r / grid.hp, ih = r % grid.hp - s.pad_h;
        uint8_t* row = dst + r * grid.wp * c;
        if (ih < 0 || ih >= s.height) {
          std::memset(row, zp_byte, grid.wp * c);
          continue;
        }
        std::memset(row, zp_byte, s.pad_w * c);
        std::memcpy(row + s.pad_w * c, src + (img * s.height + ih) * s.width * c, s.width * c);
        std::memset(row + (s.pad_w + s.width) * c, zp_byte, s.pad_w * c);
      }
    };
    const cpu::Int8GemmPlan plan = cpu::int8_gemm_plan(m, oc, threads, direct_depth);
    if (inline_run) {
      pad_rows(0, s.batch * grid.hp);
    } else {
      at::parallel_for(0, s.batch * grid.hp, 16, pad_rows);
    }
    std::memset(dst + grid.rows() * c, zp_byte, buffer_bytes - grid.rows() * c);  // read by dropped rows only
    cpu::Int8GemmArgs a = base;
    at::Tensor narrow_packed;
    if (wide_direct) {
      a = group_args(0);
    } else {
      // [OC, KH * row_chunks * 64]: kernel row kh's KW * C bytes (the (kw, c) order of the dense
      // rows) at the start of its chunks, zero after them.
      const at::Tensor dense_rows = w.permute({0, 2, 3, 1}).contiguous().reshape({oc, depth});
      at::Tensor direct_rows = at::zeros({oc, direct_depth}, w.options());
      const int8_t* from = dense_rows.data_ptr<int8_t>();
      int8_t* to = direct_rows.data_ptr<int8_t>();
      for (int64_t o = 0; o < oc; ++o)
        for (int64_t kh = 0; kh < s.kernel_h; ++kh)
          std::memcpy(to + o * direct_depth + kh * row_chunks * 64, from + o * depth + kh * row_bytes, row_bytes);
      const int64_t direct_words = cpu::int8_packed_words_per_row(direct_depth);
      narrow_packed = at::empty({oc * direct_words}, w.options().dtype(at::kInt));
      cpu::int8_pack_weight(to, oc, direct_depth, direct_depth, narrow_packed.data_ptr<int32_t>());
      a.w = cpu::int8_packed_view(narrow_packed.data_ptr<int32_t>(), oc, direct_words);
    }
    a.x = dst;
    a.m = m;
    a.ldx = c;
    a.out = out_bytes;
    run_tasks(plan.tasks(),
              [&](int64_t b, int64_t e) { cpu::int8_conv_direct_run(a, plan, a_offsets.data(), grid, b, e); });
    return out;
  }

  // Implicit GEMM: tasks are (group, chunk of output pixels, range of 64-column panels). A task
  // gathers its chunk once into a reused per-thread buffer (<= 256 KB, next to one weight panel in
  // L2) and runs the microkernels over its panels. Panels are split only when there are too few
  // chunks to keep every thread busy (batch 1, late layers); the gather is then repeated per split.
  const int64_t k_pad = cpu::int8_padded_k(depth);
  // Chunks are whole microkernel passes: 6 rows on the vector kernels, 32 (two row tiles) on AMX.
  auto chunk_for = [&](int64_t tile_rows) {
    const int64_t max_chunk = std::max<int64_t>(tile_rows, (256 * 1024 / k_pad) / tile_rows * tile_rows);
    const int64_t per_thread = (rows + 2 * threads - 1) / (2 * threads);
    return std::min(max_chunk, std::max<int64_t>(tile_rows, (per_thread + tile_rows - 1) / tile_rows * tile_rows));
  };
  int64_t chunk = chunk_for(cpu::kInt8TileRows);
  // The tile kernel is chosen on all the rows (a small image at batch 1 then splits its columns, not
  // its rows, between the threads).
  const bool amx = cpu::int8_gemm_uses_amx(rows, ocg, depth);
  if (amx) chunk = chunk_for(2 * cpu::kAmxTileRows);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  const int64_t panels = (ocg + cpu::kInt8PanelCols - 1) / cpu::kInt8PanelCols;
  int64_t splits = 1;
  if (chunks * groups < 2 * threads) splits = std::min(panels, (2 * threads + chunks * groups - 1) / (chunks * groups));
  const int64_t panels_per_split = (panels + splits - 1) / splits;
  run_tasks(groups * chunks * splits, [&](int64_t begin, int64_t end) {
    thread_local std::vector<uint8_t> buffer;
    buffer.resize(static_cast<size_t>(chunk * k_pad));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / (chunks * splits), c = (t / splits) % chunks, sp = t % splits;
      const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
      const int64_t p0 = sp * panels_per_split, p1 = std::min(panels, p0 + panels_per_split);
      if (p0 >= p1) continue;
      cpu::int8_conv_gather_rows(static_cast<const uint8_t*>(xc.data_ptr()), s, g, r0, r1,
                                 static_cast<uint8_t>(x_zero_point & 0xFF), buffer.data(), k_pad);
      cpu::Int8GemmArgs a = group_args(g);
      a.x = buffer.data();
      a.m = r1 - r0;
      a.ldx = k_pad;
      a.out = out_bytes + (r0 * oc + g * ocg) * out_elem;
      cpu::Int8GemmPlan plan;
      plan.panels = panels;
      plan.row_chunks = 1;
      plan.chunk_rows = r1 - r0;
      plan.amx = amx;
      cpu::int8_gemm_run(a, plan, p0, p1);
    }
  });
  return out;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CPU, m) {
  m.impl("int8_conv2d_pack_weight", &ck::ops::int8_conv2d_pack_weight_cpu);
  m.impl("int8_conv2d", &ck::ops::int8_conv2d_cpu);
}
