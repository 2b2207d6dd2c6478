// The packed-layout size ops: the one computation of every pack's shape (packed_checks.h), exposed
// so that the Python fake kernels derive shapes from it instead of repeating the formulas. They
// take no tensors and run on any backend.
#include <torch/library.h>

#include <string>
#include <vector>

#include "packed_checks.h"

namespace ck::ops {
namespace {

PackedFamily family_arg(c10::string_view family, const char* op) {
  const std::string name(family);
  const int32_t id = packed::family_from_name(name.c_str());
  TORCH_CHECK(id != 0, op, ": family must be the name of a pack op (int8_pack_weight, int8_conv2d_pack_weight, ",
              "codebook_pack, sparse24_f32_pack, sparse24_bf16_pack, sparse24_int8_pack or int4_pack), got \"", name,
              "\"");
  return static_cast<PackedFamily>(id);
}

std::vector<int64_t> packed_shape_op(c10::string_view family, int64_t n, int64_t k, int64_t param) {
  constexpr const char* op = "packed_shape";
  return packed_shape(family_arg(family, op), n, k, param, op);
}

// N of a 2-D pack of the given shape: shape[0] minus the header rows of shape[1] words per row.
int64_t packed_n_op(c10::string_view family, at::IntArrayRef shape) {
  constexpr const char* op = "packed_n";
  const PackedFamily f = family_arg(family, op);
  TORCH_CHECK(packed::family_is_2d(f), op, ": ", packed::family_name(f),
              " is a 1-D pack; the ops take its N from their meta argument");
  TORCH_CHECK(shape.size() == 2 && shape[1] > 0, op, ": a ", packed::family_name(f),
              " is 2-D with at least one word per row, got shape ", shape);
  const int64_t rows = packed::header_rows(shape[1]);
  TORCH_CHECK(shape[0] > rows, op, ": shape ", shape, " has no row after the ", rows, " header rows of a ",
              packed::family_name(f));
  return shape[0] - rows;
}

}  // namespace
}  // namespace ck::ops

TORCH_LIBRARY_IMPL(compress_kernels, CompositeExplicitAutograd, m) {
  m.impl("packed_shape", &ck::ops::packed_shape_op);
  m.impl("packed_n", &ck::ops::packed_n_op);
}
