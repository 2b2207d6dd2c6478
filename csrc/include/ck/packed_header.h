// The header every packed weight starts with: which pack op wrote it, for which shape, in which
// layout version, so that every op reading a pack can refuse one that is sliced, truncated,
// corrupted, built for another shape or by another pack op, instead of computing garbage.
// Torch-free; the validation that reads it lives in csrc/ops/packed_checks.h.
//
// Header words (int32, little-endian like the payload):
//   word 0  kMagic = 0x4B504B43, the bytes "CKPK" in memory order
//   word 1  family: the pack op that wrote the tensor (PackedFamily below)
//   word 2  layout version of that family's payload (kLayoutVersion; a pack written by another
//           version is refused, never reinterpreted)
//   word 3  N: output rows (columns of the GEMM output)
//   word 4  K: the unpadded reduction depth (KH * KW * C / groups for int8_conv2d_pack_weight)
//   word 5  the family parameter: bits per index for codebook_pack, groups for
//           int8_conv2d_pack_weight, group_size + kInt4AsymmetricFlag * asymmetric for int4_pack,
//           0 for the other families
//   word 6  payload size: elements of the packed tensor's dtype after the header region
//   word 7  check value: header_check(words 0 .. 6), see below
// Words 8 .. end of the header region are zero.
//
// Where the header sits (so that slicing, truncating or copying part of a pack loses or
// contradicts it, and the output shape of every op stays a function of the pack's SHAPE):
//   * 2-D packs (int8_pack_weight, int8_conv2d_pack_weight, codebook_pack, int4_pack; int32 [rows, W], W
//     words per row): header_rows(W) = 16 / gcd(W, 16) leading rows, then the N payload rows, so
//     the shape is [header_rows(W) + N, W] and N = rows - header_rows(W). header_rows(W) * W is
//     the smallest multiple of 16 words (64 bytes) that holds the 8 header words: the payload
//     starts 64-byte aligned, as the kernels' blocks of 16 rows did in a fresh allocation.
//   * 1-D packs (sparse24_f32_pack float, sparse24_bf16_pack bfloat16, sparse24_int8_pack int32):
//     the first 64 bytes (kHeaderBytes1d: 16 floats, 32 bf16 or 16 int32 elements), then the
//     payload; N comes from the op's meta argument as before.
// The payload after the header is byte for byte the layout the kernels read (csrc/cpu/int8_gemm.h,
// ck/bitpack.h, csrc/cpu/sparse24.h, csrc/cpu/int4.h); kernels get a pointer past the header.
//
// Check value: 32-bit FNV-1a over the 28 bytes of words 0 .. 6 in little-endian order:
//   h = 2166136261; for each byte b: h = (h ^ b) * 16777619 mod 2^32.
// Each step is a bijection of h for a fixed byte, so changing any single header byte (any flipped
// bit) changes the check value: a corrupted word is always refused.
#pragma once

#include <cstdint>

namespace ck::packed {

constexpr int32_t kMagic = 0x4B504B43;  // "CKPK"
constexpr int32_t kLayoutVersion = 1;
constexpr int64_t kHeaderWords = 8;         // words with content
constexpr int64_t kHeaderAlignWords = 16;   // 2-D header regions are multiples of 16 words
constexpr int64_t kHeaderBytes1d = 64;      // header region of the 1-D packs

enum HeaderWord : int {
  kWordMagic = 0,
  kWordFamily = 1,
  kWordVersion = 2,
  kWordN = 3,
  kWordK = 4,
  kWordParam = 5,
  kWordPayload = 6,
  kWordCheck = 7,
};

enum class PackedFamily : int32_t {
  kInt8 = 1,          // int8_pack_weight: int32 [header_rows + N, ceil(K / 4) + 2]
  kInt8Conv2d = 2,    // int8_conv2d_pack_weight: int32 [header_rows + OC, ceil(depth / 4) + 2]
  kCodebook = 3,      // codebook_pack: int32 [header_rows + N, ceil(K / (32 / bits))]
  kSparse24F32 = 4,   // sparse24_f32_pack: float [16 + sparse24_f32_packed_floats(N, K)]
  kSparse24Bf16 = 5,  // sparse24_bf16_pack: bfloat16 [32 + sparse24_bf16_packed_halves(N, K)]
  kSparse24Int8 = 6,  // sparse24_int8_pack: int32 [16 + sparse24_int8_packed_words(N, K)]
  kInt4 = 7,          // int4_pack: int32 [header_rows + N, int4_words_per_row(K, group_size, asymmetric)]
};
constexpr int32_t kFirstFamily = 1, kLastFamily = 7;
// int4_pack's family parameter: group_size, plus this flag for a pack with zero points.
constexpr int64_t kInt4AsymmetricFlag = int64_t{1} << 16;

// The name of the pack op that writes the family ("" for an unknown id).
inline const char* family_name(int32_t family) {
  switch (family) {
    case 1:
      return "int8_pack_weight";
    case 2:
      return "int8_conv2d_pack_weight";
    case 3:
      return "codebook_pack";
    case 4:
      return "sparse24_f32_pack";
    case 5:
      return "sparse24_bf16_pack";
    case 6:
      return "sparse24_int8_pack";
    case 7:
      return "int4_pack";
    default:
      return "";
  }
}
inline const char* family_name(PackedFamily f) { return family_name(static_cast<int32_t>(f)); }

// The family whose pack op is `name`; 0 when none is.
inline int32_t family_from_name(const char* name) {
  for (int32_t f = kFirstFamily; f <= kLastFamily; ++f) {
    const char* a = family_name(f);
    const char* b = name;
    while (*a != 0 && *a == *b) ++a, ++b;
    if (*a == 0 && *b == 0) return f;
  }
  return 0;
}

// 2-D packs hold the header in rows; 1-D packs in their first kHeaderBytes1d bytes.
inline bool family_is_2d(PackedFamily f) {
  return f == PackedFamily::kInt8 || f == PackedFamily::kInt8Conv2d || f == PackedFamily::kCodebook ||
         f == PackedFamily::kInt4;
}

// Leading header rows of a 2-D pack with `words_per_row` int32 words per row (>= 1):
// 16 / gcd(words_per_row, 16).
inline int64_t header_rows(int64_t words_per_row) {
  int64_t a = words_per_row % kHeaderAlignWords, b = kHeaderAlignWords;
  while (a != 0) {
    const int64_t t = b % a;
    b = a;
    a = t;
  }
  return kHeaderAlignWords / b;
}

// FNV-1a of words 0 .. 6 (see the file comment).
inline int32_t header_check(const int32_t* words) {
  uint32_t h = 2166136261u;
  for (int w = 0; w < kWordCheck; ++w) {
    const uint32_t v = static_cast<uint32_t>(words[w]);
    for (int byte = 0; byte < 4; ++byte) {
      h ^= (v >> (8 * byte)) & 0xFFu;
      h *= 16777619u;
    }
  }
  return static_cast<int32_t>(h);
}

// Fills words 0 .. 7 of a header (the caller zeroes the rest of the header region). Every value
// must fit in int32 (the pack ops check that before packing).
inline void write_header(int32_t* words, PackedFamily family, int64_t n, int64_t k, int64_t param,
                         int64_t payload_elements) {
  words[kWordMagic] = kMagic;
  words[kWordFamily] = static_cast<int32_t>(family);
  words[kWordVersion] = kLayoutVersion;
  words[kWordN] = static_cast<int32_t>(n);
  words[kWordK] = static_cast<int32_t>(k);
  words[kWordParam] = static_cast<int32_t>(param);
  words[kWordPayload] = static_cast<int32_t>(payload_elements);
  words[kWordCheck] = header_check(words);
}

}  // namespace ck::packed
