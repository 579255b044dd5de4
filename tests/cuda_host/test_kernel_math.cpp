// The per-element and per-row functions the CUDA kernels run, executed on the CPU over every element and
// compared with the CPU policies: bit-exact where the kernel must be, tight tolerances where only the
// summation order differs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/loss/cross_entropy.hpp>
#include <vidlora/loss/cuda/cross_entropy.cuh>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/cuda/elementwise.cuh>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/cuda/multi_tensor.cuh>
#include <vidlora/quant/cuda/dequantize.cuh>
#include <vidlora/quant/quantizer.hpp>

namespace {
std::vector<float> random_values(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = (vidlora::random_uniform(seed, 3, i) * 2.0f - 1.0f) * scale;
  return v;
}
bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

template <class Format, int Blocksize>
void check_dequantize_matches(std::size_t numel, bool double_quant) {
  using Q = vidlora::quant::Quantizer<Format, Blocksize>;
  const std::vector<float> values = random_values(numel, numel + Blocksize, 3.0f);
  const vidlora::quant::QuantizedBlocks q = Q::quantize(values, double_quant);
  const std::vector<float> want = Q::dequantize(q);
  vidlora::quant::cuda::Quantized4bitView view;
  view.packed = q.packed.data();
  view.absmax = double_quant ? nullptr : q.absmax.data();
  view.qabsmax = double_quant ? q.qabsmax.data() : nullptr;
  view.nested_absmax = double_quant ? q.nested_absmax.data() : nullptr;
  view.absmax_offset = q.absmax_offset;
  view.numel = static_cast<std::int64_t>(numel);
  view.blocksize_log2 = vidlora::quant::cuda::blocksize_log2(Blocksize);
  REQUIRE_NOTHROW(vidlora::quant::cuda::check_view(view, "test"));
  const auto t = vidlora::quant::cuda::make_decode_tables<Format>();
  std::size_t mismatches = 0;
  for (std::int64_t j = 0; j < static_cast<std::int64_t>(q.packed.size()); ++j) {
    float a, b;
    vidlora::quant::cuda::dequantize_byte(view, t.code, t.dynamic_map, j, a, b);
    mismatches += !same_bits(a, want[static_cast<std::size_t>(2 * j)]);
    if (static_cast<std::size_t>(2 * j + 1) < numel)
      mismatches += !same_bits(b, want[static_cast<std::size_t>(2 * j + 1)]);
  }
  CHECK(mismatches == 0);
}
}  // namespace

TEST_CASE("kernel dequantize body is bit-exact with the CPU dequantizer", "[cuda_host][quant]") {
  check_dequantize_matches<vidlora::quant::NF4, 64>(4096, false);
  check_dequantize_matches<vidlora::quant::NF4, 64>(64 * 300 + 37, true);  // > 256 blocks, odd partial tail
  check_dequantize_matches<vidlora::quant::FP4, 64>(1001, true);
  check_dequantize_matches<vidlora::quant::FP4, 128>(999, false);
  check_dequantize_matches<vidlora::quant::NF4, 4096>(10000, true);
  check_dequantize_matches<vidlora::quant::NF4, 32>(33, false);
}

TEST_CASE("dequantize-GEMV row body equals the dense product of the dequantized matrix", "[cuda_host][quant]") {
  const std::int64_t rows = 9, cols = 96;
  using Q = vidlora::quant::Quantizer<vidlora::quant::NF4, 64>;
  const std::vector<float> w = random_values(static_cast<std::size_t>(rows * cols), 77);
  const auto q = Q::quantize(w, true);
  const std::vector<float> dense = Q::dequantize(q);
  const std::vector<float> x = random_values(static_cast<std::size_t>(cols), 78);
  vidlora::quant::cuda::DequantGemvParams p;
  p.w = {q.packed.data(), nullptr, q.qabsmax.data(), q.nested_absmax.data(), q.absmax_offset, rows * cols, 6};
  p.rows = rows;
  p.cols = cols;
  p.x = x.data();
  REQUIRE_NOTHROW(vidlora::quant::cuda::check_gemv(p));
  const auto t = vidlora::quant::cuda::make_decode_tables<vidlora::quant::NF4>();
  for (std::int64_t r = 0; r < rows; ++r) {
    double want = 0;
    for (std::int64_t c = 0; c < cols; ++c)
      want += static_cast<double>(dense[static_cast<std::size_t>(r * cols + c)]) * x[static_cast<std::size_t>(c)];
    CHECK(vidlora::quant::cuda::dequant_gemv_row(p, t, r) == Approx(want).epsilon(1e-5).margin(1e-5));
  }
  p.cols = 95;
  CHECK_THROWS_WITH(vidlora::quant::cuda::check_gemv(p), Catch::Contains("even column count"));
}

TEST_CASE("the tables handed to the kernels carry the quantizer's codes and dynamic map", "[cuda_host][quant]") {
  const auto t = vidlora::quant::cuda::make_decode_tables<vidlora::quant::FP4>();
  for (std::size_t i = 0; i < 16; ++i) REQUIRE(same_bits(t.code[i], vidlora::quant::FP4::code[i]));
  for (std::size_t i = 0; i < 256; ++i) REQUIRE(same_bits(t.dynamic_map[i], vidlora::quant::kSignedDynamicMap[i]));
  CHECK(t.dynamic_map[0] < 0.0f);  // sorted: the most negative code first, 1.0 last
  CHECK(t.dynamic_map[255] == 1.0f);
}

TEST_CASE("quantized views are checked before launch", "[cuda_host][quant]") {
  const std::uint8_t packed[4] = {};
  const float absmax[1] = {1};
  vidlora::quant::cuda::Quantized4bitView v{packed, absmax, nullptr, nullptr, 0.0f, 8, 6};
  CHECK_NOTHROW(vidlora::quant::cuda::check_view(v, "t"));
  v.blocksize_log2 = 4;
  CHECK_THROWS_WITH(vidlora::quant::cuda::check_view(v, "t"), Catch::Contains("outside [32, 4096]"));
  v.blocksize_log2 = 6;
  v.absmax = nullptr;
  CHECK_THROWS_WITH(vidlora::quant::cuda::check_view(v, "t"), Catch::Contains("either absmax"));
  CHECK(vidlora::quant::cuda::blocksize_log2(64) == 6);
  CHECK(vidlora::quant::cuda::blocksize_log2(48) == -1);
  CHECK(vidlora::quant::cuda::blocksize_log2(8192) == -1);
}

TEST_CASE("multi-tensor chunks cover every element exactly once", "[cuda_host][optim]") {
  const std::vector<std::int64_t> sizes = {5, 0, 16, 17, 1};
  const auto chunks = vidlora::optim::cuda::make_chunks(sizes, 8);
  std::vector<std::vector<int>> hits;
  for (auto s : sizes) hits.emplace_back(static_cast<std::size_t>(s), 0);
  for (const auto& c : chunks)
    for (std::int64_t i = c.begin; i < std::min(c.begin + 8, sizes[static_cast<std::size_t>(c.tensor)]); ++i)
      ++hits[static_cast<std::size_t>(c.tensor)][static_cast<std::size_t>(i)];
  for (const auto& h : hits)
    for (int count : h) CHECK(count == 1);
  CHECK(chunks.size() == 1 + 0 + 2 + 3 + 1);
  CHECK_THROWS_AS(vidlora::optim::cuda::make_chunks({4}, 0), vidlora::cuda::CudaError);
}

TEST_CASE("the kernels' clip coefficient is optim::clip_coefficient, torch's max_norm / (norm + 1e-6)",
          "[cuda_host][optim]") {
  // One definition (optim/clip_coefficient.hpp): the CUDA name is a using-declaration of it.
  CHECK(&vidlora::optim::cuda::clip_coefficient == &vidlora::optim::clip_coefficient);
  CHECK(vidlora::optim::clip_coefficient(5.0, 1.0) == 1.0 / (5.0 + 1e-6));
  CHECK(vidlora::optim::clip_coefficient(0.0, 2.0) == 2.0 / 1e-6);
  CHECK(vidlora::optim::clip_coefficient(1.0, 1.0) < 1.0);  // norm == max_norm still clips (by 1 - 1e-6)
}

TEST_CASE("squares and clip coefficient match clip_grad_norm", "[cuda_host][optim]") {
  vidlora::Matrix g1 = vidlora::Matrix::Constant(3, 4, 0.5f), g2 = vidlora::Matrix::Constant(2, 2, -2.0f);
  vidlora::Matrix v1 = g1, v2 = g2;
  double sum = 0;
  for (Eigen::Index i = 0; i < g1.size(); ++i) sum += vidlora::optim::cuda::square(g1.data()[i]);
  for (Eigen::Index i = 0; i < g2.size(); ++i) sum += vidlora::optim::cuda::square(g2.data()[i]);
  const double norm = std::sqrt(sum);
  const float scale = static_cast<float>(vidlora::optim::clip_coefficient(norm, 1.0));
  std::vector<vidlora::optim::Parameter> params = {{"a", &v1, &g1}, {"b", &v2, &g2}};
  const vidlora::Matrix g1_before = g1;
  const double cpu_norm = vidlora::optim::clip_grad_norm(std::span<const vidlora::optim::Parameter>(params), 1.0);
  CHECK(cpu_norm == norm);
  CHECK(g1(0, 0) == g1_before(0, 0) * scale);
}

TEST_CASE("cross-entropy row statistics and gradient element match the CPU loss", "[cuda_host][loss]") {
  const std::int64_t rows = 5, vocab = 1003;
  vidlora::Matrix logits(rows, vocab);
  const auto v = random_values(static_cast<std::size_t>(rows * vocab), 91, 8.0f);
  std::copy(v.begin(), v.end(), logits.data());
  const std::vector<int> targets = {3, -100, 1002, 0, 517};
  const double eps = 0.1;
  vidlora::loss::CrossEntropyOptions options;
  options.label_smoothing = eps;
  const auto want = vidlora::loss::cross_entropy(logits, targets, options);
  const std::vector<std::int32_t> t32(targets.begin(), targets.end());
  const long valid = vidlora::loss::cuda::check_ce_targets(t32, vocab, -100, eps);
  CHECK(valid == 4);
  const double scale = 1.0 / vidlora::loss::cuda::ce_normalizer(false, valid);
  double loss_sum = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[static_cast<std::size_t>(r)] == -100) continue;
    // The kernel's order: 256 strided per-thread folds, then a pairwise tree merge.
    std::vector<vidlora::loss::cuda::RowStats> lanes(256);
    for (std::int64_t j = 0; j < vocab; ++j) lanes[static_cast<std::size_t>(j % 256)].add(logits(r, j));
    for (std::size_t w = 128; w > 0; w /= 2)
      for (std::size_t i = 0; i < w; ++i) lanes[i].merge(lanes[i + w]);
    const double lse = lanes[0].lse.value();
    const int t = targets[static_cast<std::size_t>(r)];
    loss_sum += vidlora::loss::cross_entropy_token_loss(lse, logits(r, t), lanes[0].logit_sum, vocab, eps);
    for (std::int64_t j = 0; j < vocab; ++j) {
      const float g = vidlora::loss::cuda::ce_grad_element(logits(r, j), lse, j == t, eps, 1.0 / vocab, scale);
      REQUIRE(g == Approx(want.grad(r, j)).epsilon(1e-5).margin(1e-9));
    }
  }
  CHECK(loss_sum * scale == Approx(want.loss).epsilon(1e-7));  // the CPU sums exp in float
  CHECK_THROWS_WITH(vidlora::loss::cuda::check_ce_targets({5}, 5, -100, 0.0),
                    Catch::Contains("target 5 at position 0"));
  CHECK_THROWS_AS(vidlora::loss::cuda::check_ce_targets({0}, 5, -100, 1.5), vidlora::cuda::CudaError);
  CHECK(vidlora::loss::cuda::ce_normalizer(true, 7) == 1.0);
  CHECK(vidlora::loss::cuda::ce_normalizer(false, 7, 20) == 20.0);
}

TEST_CASE("the CUDA loss's normalizer and target check are the CPU loss's", "[cuda_host][loss]") {
  // One definition (loss/ce_normalizer.hpp): the CUDA name is a using-declaration of it.
  CHECK(&vidlora::loss::cuda::ce_normalizer == &vidlora::loss::ce_normalizer);
  using vidlora::loss::ce_normalizer;
  CHECK(ce_normalizer(true, 7, 0) == 1.0);
  CHECK(ce_normalizer(true, 0, 0) == 1.0);
  CHECK(ce_normalizer(false, 7, 0) == 7.0);
  CHECK(ce_normalizer(false, 0, 0) == 0.0);  // nothing valid: the loss is 0 by definition
  CHECK(ce_normalizer(false, 7, 20) == 20.0);
  CHECK(ce_normalizer(false, 7, -1) == 7.0);  // only a positive total replaces the count
  vidlora::loss::CrossEntropyOptions o;
  o.total_valid_tokens = 20;
  CHECK(vidlora::loss::detail::normalizer(o, 7) == 20.0);
  o.reduction = vidlora::loss::Reduction::Sum;
  o.total_valid_tokens = 0;
  CHECK(vidlora::loss::detail::normalizer(o, 7) == 1.0);
  CHECK(vidlora::loss::ce_target_in_range(0, 5));
  CHECK(vidlora::loss::ce_target_in_range(4, 5));
  CHECK_FALSE(vidlora::loss::ce_target_in_range(5, 5));
  CHECK_FALSE(vidlora::loss::ce_target_in_range(-1, 5));
  // Same predicate, each side's own exception type and message.
  const std::vector<int> bad = {1, -3};
  CHECK_THROWS_AS(vidlora::loss::detail::check_targets("f", bad, 2, 5, {}), vidlora::Error);
  CHECK_THROWS_WITH(vidlora::loss::detail::check_targets("f", bad, 2, 5, {}),
                    Catch::Contains("target -3 at position 1 is outside [0, 5)"));
  CHECK_THROWS_AS(vidlora::loss::cuda::check_ce_targets({1, -3}, 5, -100, 0.0), vidlora::cuda::CudaError);
  CHECK_THROWS_WITH(vidlora::loss::cuda::check_ce_targets({1, -3}, 5, -100, 0.0),
                    Catch::Contains("target -3 at position 1 is outside [0, 5)"));
}

TEST_CASE("rope pair body over every pair equals RotaryTable bit for bit", "[cuda_host][model]") {
  const int heads = 3, head_dim = 8;
  const std::int64_t tokens = 6;
  vidlora::Matrix x(tokens, heads * head_dim);
  const auto v = random_values(static_cast<std::size_t>(x.size()), 5);
  std::copy(v.begin(), v.end(), x.data());
  const std::vector<Eigen::Index> pos = {0, 1, 2, 7, 40, 3};
  const std::vector<std::int32_t> pos32(pos.begin(), pos.end());
  std::vector<float> cos_t, sin_t;
  vidlora::model::cuda::rope_tables(vidlora::model::default_rope_frequencies(head_dim, 10000.0), 41, cos_t, sin_t);
  for (bool inverse : {false, true}) {
    vidlora::Matrix want = x, got = x;
    vidlora::model::RotaryTable table(head_dim, 10000.0);
    table.apply(want, pos, inverse);
    vidlora::model::cuda::RopeParams p{
        got.data(), pos32.data(), cos_t.data(), sin_t.data(), tokens, heads, head_dim, inverse, {}};
    for (std::int64_t i = 0; i < tokens * heads * head_dim / 2; ++i) vidlora::model::cuda::rope_pair(p, i);
    CHECK(got == want);
  }
  CHECK_THROWS_AS(vidlora::model::cuda::rope_tables(vidlora::model::RopeFrequencies{}, 2, cos_t, sin_t),
                  vidlora::cuda::CudaError);
  // Scaled frequencies, and yarn's factor on cos and sin: the tables of the RotaryTable's frequencies rotate as it does.
  vidlora::model::RopeScaling yarn;
  yarn.type = vidlora::model::RopeType::Yarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 16;
  vidlora::model::RotaryTable table(head_dim, 10000.0, yarn, 64);
  REQUIRE(table.attention_scaling() != 1.0f);
  vidlora::model::cuda::rope_tables(table.frequency_state().current(), 41, cos_t, sin_t);
  for (bool inverse : {false, true}) {
    vidlora::Matrix want = x, got = x;
    table.apply(want, pos, inverse);
    vidlora::model::cuda::RopeParams p{
        got.data(), pos32.data(), cos_t.data(), sin_t.data(), tokens, heads, head_dim, inverse, {}};
    for (std::int64_t i = 0; i < tokens * heads * head_dim / 2; ++i) vidlora::model::cuda::rope_pair(p, i);
    CHECK(got == want);
  }
}

TEST_CASE("rope tables from a first position are the rows of the full table, and rotate a KV-cache step as RotaryTable",
          "[cuda_host][model]") {
  const int heads = 2, head_dim = 8, half = head_dim / 2;
  std::vector<float> cos_all, sin_all, cos_t, sin_t;
  vidlora::model::cuda::rope_tables(vidlora::model::default_rope_frequencies(head_dim, 10000.0), 2500, cos_all,
                                    sin_all);
  const std::int64_t first = 2431, n = 3;  // a generation step after a 2,431-position prompt
  vidlora::model::cuda::rope_tables(vidlora::model::default_rope_frequencies(head_dim, 10000.0), n, cos_t, sin_t,
                                    first);
  REQUIRE(cos_t.size() == static_cast<std::size_t>(n * half));
  for (std::size_t i = 0; i < cos_t.size(); ++i) {
    CHECK(cos_t[i] == cos_all[static_cast<std::size_t>(first * half) + i]);
    CHECK(sin_t[i] == sin_all[static_cast<std::size_t>(first * half) + i]);
  }
  // The executor's positions for such a step index the table's own rows (0 .. n - 1).
  vidlora::Matrix x(n, heads * head_dim);
  const auto v = random_values(static_cast<std::size_t>(x.size()), 9);
  std::copy(v.begin(), v.end(), x.data());
  vidlora::Matrix want = x, got = x;
  vidlora::model::RotaryTable table(head_dim, 10000.0);
  table.apply(want, std::vector<Eigen::Index>{first, first + 1, first + 2}, false);
  const std::vector<std::int32_t> rows = {0, 1, 2};
  vidlora::model::cuda::RopeParams p{got.data(), rows.data(), cos_t.data(), sin_t.data(), n, heads, head_dim,
                                     false,      {}};
  for (std::int64_t i = 0; i < n * heads * half; ++i) vidlora::model::cuda::rope_pair(p, i);
  CHECK(got == want);
}

TEST_CASE("rms norm element with the double row sum equals model rms_norm", "[cuda_host][model]") {
  const Eigen::Index rows = 4, n = 300;
  vidlora::Matrix x(rows, n);
  const auto v = random_values(static_cast<std::size_t>(x.size()), 6, 4.0f);
  std::copy(v.begin(), v.end(), x.data());
  vidlora::Vector w = vidlora::Vector::LinSpaced(n, 0.5f, 1.5f);
  vidlora::Vector inv;
  const vidlora::Matrix want = vidlora::model::rms_norm<float>(x, w, 1e-6, &inv);
  for (Eigen::Index r = 0; r < rows; ++r) {
    std::vector<double> lanes(256, 0.0);  // the kernel's strided partial sums and tree
    for (Eigen::Index j = 0; j < n; ++j)
      lanes[static_cast<std::size_t>(j % 256)] += static_cast<double>(x(r, j)) * x(r, j);
    for (std::size_t s = 128; s > 0; s /= 2)
      for (std::size_t i = 0; i < s; ++i) lanes[i] += lanes[i + s];
    const float rr = static_cast<float>(vidlora::model::rms_inverse(lanes[0], static_cast<int>(n), 1e-6));
    CHECK(rr == Approx(inv(r)).epsilon(1e-7));
    for (Eigen::Index j = 0; j < n; ++j)
      REQUIRE(vidlora::model::cuda::rms_norm_element(x(r, j), rr, w(j)) ==
              Approx(want(r, j)).epsilon(2e-7).margin(1e-30));
  }
}

TEST_CASE("swiglu elements are silu of the gate times up and their derivatives", "[cuda_host][model]") {
  std::vector<float> gate = {-3.0f, -0.5f, 0.0f, 0.7f, 4.0f}, up = {1.0f, 2.0f, -1.0f, 0.5f, -2.0f}, h(5),
                     dh = {1, 1, 1, 1, 1}, dg(5), du(5);
  vidlora::model::cuda::SwigluParams p{gate.data(), up.data(), h.data(), dh.data(), dg.data(), du.data(), 5, {}};
  for (std::int64_t i = 0; i < 5; ++i) {
    vidlora::model::cuda::swiglu_forward_element(p, i);
    vidlora::model::cuda::swiglu_backward_element(p, i);
  }
  for (std::size_t i = 0; i < 5; ++i) {
    const double g = gate[i], s = 1.0 / (1.0 + std::exp(-g));
    CHECK(h[i] == Approx(g * s * up[i]).epsilon(1e-6).margin(1e-7));
    const double eps = 1e-3;  // central difference of h w.r.t. gate
    const double fd =
        ((g + eps) / (1 + std::exp(-(g + eps))) - (g - eps) / (1 + std::exp(-(g - eps)))) / (2 * eps) * up[i];
    CHECK(dg[i] == Approx(fd).epsilon(1e-4).margin(1e-5));
    CHECK(du[i] == Approx(g * s).epsilon(1e-6).margin(1e-7));
  }
}

TEST_CASE("attention visibility is causal from the query offset and honours the key mask", "[cuda_host][model]") {
  const std::int32_t mask[6] = {1, 1, 0, 1, 1, 1};
  vidlora::model::cuda::AttentionParams p;
  p.tq = 3;
  p.tk = 6;
  p.q_heads = 4;
  p.kv_heads = 2;
  p.head_dim = 8;
  p.q_offset = 3;
  CHECK(vidlora::model::cuda::attention_visible(p, 0, 3));
  CHECK_FALSE(vidlora::model::cuda::attention_visible(p, 0, 4));
  CHECK(vidlora::model::cuda::attention_visible(p, 2, 5));
  p.key_mask = mask;
  CHECK_FALSE(vidlora::model::cuda::attention_visible(p, 2, 2));
  CHECK(vidlora::model::cuda::kv_head_of(p, 3) == 1);
  CHECK(vidlora::model::cuda::kv_head_of(p, 1) == 0);
  CHECK_NOTHROW(vidlora::model::cuda::check_attention(p, "t"));
  p.tk = vidlora::model::cuda::kMaxAttentionKeys + 1;
  CHECK_THROWS_WITH(vidlora::model::cuda::check_attention(p, "t"), Catch::Contains("shared memory"));
  p.tk = 6;
  p.kv_heads = 3;
  CHECK_THROWS_AS(vidlora::model::cuda::check_attention(p, "t"), vidlora::cuda::CudaError);
}

TEST_CASE("the deterministic dk/dv kernel's rows are exactly the queries that see each key", "[cuda_host][model]") {
  vidlora::model::cuda::AttentionParams p;
  p.q_heads = p.kv_heads = 1;
  p.head_dim = 8;
  for (const auto [tq, tk, offset] : {std::array<std::int64_t, 3>{7, 7, 0}, {3, 6, 3}, {5, 21, 16}}) {
    p.tq = tq;
    p.tk = tk;
    p.q_offset = offset;
    for (std::int64_t j = 0; j < tk; ++j)
      for (std::int64_t i = 0; i < tq; ++i)
        CHECK((i >= vidlora::model::cuda::attention_first_query(p, j)) ==
              vidlora::model::cuda::attention_visible(p, i, j));
  }
  // the score gradient both backward kernels use: p·(dp − Σ p·dp)·scale
  CHECK(vidlora::model::cuda::attention_score_grad(0.25f, 3.0f, 1.0f, 0.5f) == 0.25f);
  p.row_dot = reinterpret_cast<float*>(16);  // a scratch pointer: needs the forward's lse and head_dim <= 256
  p.tq = p.tk = 4;
  CHECK_THROWS_WITH(vidlora::model::cuda::check_attention(p, "t"), Catch::Contains("forward's lse"));
  p.lse = reinterpret_cast<float*>(16);
  CHECK_NOTHROW(vidlora::model::cuda::check_attention(p, "t"));
  p.head_dim = 512;
  CHECK_THROWS_WITH(vidlora::model::cuda::check_attention(p, "t"), Catch::Contains("head_dim <= 256 (got 512)"));
}

TEST_CASE("layer norm element with double row statistics equals model::layer_norm (CLIP)", "[cuda_host][model]") {
  const Eigen::Index rows = 5, n = 1024;
  vidlora::Matrix x(rows, n);
  const auto v = random_values(static_cast<std::size_t>(x.size()), 13);
  std::copy(v.begin(), v.end(), x.data());
  x.row(2).array() += 40.0f;   // a large mean: the deviations are what the variance sums
  x.row(4).setConstant(3.0f);  // no variance: eps alone
  vidlora::Vector w(n), b(n);
  const auto wv = random_values(static_cast<std::size_t>(2 * n), 14);
  for (Eigen::Index j = 0; j < n; ++j) {
    w(j) = 1.0f + wv[static_cast<std::size_t>(j)];
    b(j) = wv[static_cast<std::size_t>(n + j)];
  }
  const double eps = 1e-5;
  const vidlora::Matrix want = vidlora::model::layer_norm(x, w, b, eps);
  double worst = 0.0;
  for (Eigen::Index r = 0; r < rows; ++r) {
    double sum = 0.0, sq = 0.0;
    for (Eigen::Index j = 0; j < n; ++j) sum += x(r, j);
    const double mean = sum / static_cast<double>(n);
    for (Eigen::Index j = 0; j < n; ++j) sq += (x(r, j) - mean) * (x(r, j) - mean);
    const double inv = vidlora::model::cuda::layer_norm_inverse(sq, n, eps);
    for (Eigen::Index j = 0; j < n; ++j) {
      const float got = vidlora::model::cuda::layer_norm_element(x(r, j), mean, inv, w(j), b(j));
      worst = std::max(worst, std::fabs(static_cast<double>(got) - want(r, j)) /
                                  std::max(1.0, std::fabs(static_cast<double>(want(r, j)))));
    }
  }
  CHECK(worst <= 1e-6);  // the sums' order aside, the same formula: at most an ulp or so apart
  // The element itself: one float product and one float sum after the double normalisation.
  CHECK(vidlora::model::cuda::layer_norm_element(2.0f, 1.0, 0.5, 3.0f, 0.25f) == 1.75f);
}

TEST_CASE("quick_gelu is x * sigmoid(1.702 x) (CLIP's activation)", "[cuda_host][model]") {
  for (const float x : {-6.0f, -1.0f, -0.1f, 0.0f, 0.3f, 2.0f, 8.0f}) {
    const double want = x / (1.0 + std::exp(-1.702 * x));
    CHECK(vidlora::model::quick_gelu(x) == Approx(want).epsilon(1e-6).margin(1e-7));
  }
}
