#pragma once
// cuda::CudaMlp2xGelu: the Trainer's projector type for a GPU preset. A model::Mlp2xGelu (its parameters and
// gradients stay the host's, so AdamW, checkpoints and the saved projector are unchanged) whose forward and backward
// run on the device by model/cuda/projector.cuh's steps; apply() (evaluation) stays the host's.
// Inside a training step's bracket (begin_step / finish_step, as train::DecoderStep<Cuda>'s): the weights are uploaded
// once per values version (the Trainer's TrainableTensors::values_version(): they change only between steps), the
// gradients stay on the device — each clip's summed there in float64 when per_clip, else accumulated in float32 — and
// reach the host once, at finish_step (or stay there for an optimizer that steps on the device: device_parameter,
// values_current, finish_step's keep_on_device). Outside it every forward uploads the weights and every backward adds
// its gradients to the host's. apply_on_device is the evaluation's forward on the device (apply() stays the host's). Needs nvcc and vidlora::cuda (it includes fmt through model/projector.hpp).

#include <vidlora/model/cuda/projector.cuh>

#include <vidlora/core/portability.hpp>

#if VIDLORA_KERNELS
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <vidlora/comm/device_sum.hpp>
#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/float64_sum.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/splice.hpp>
#include <vidlora/optim/device_parameter.hpp>

namespace vidlora::model::cuda {

class CudaMlp2xGelu : public Mlp2xGelu {
 public:
  // The device buffers come at their first use (the weights at the first upload, the gradients at the first backward
  // or device_parameter), from the allocator use_allocator gave by then.
  explicit CudaMlp2xGelu(Mlp2xGelu host)
      : Mlp2xGelu(std::move(host)), gemm_(std::make_unique<vidlora::cuda::GemmRunner>()) {
    // The device path runs one hidden width and one bias setting for both linears (LLaVA's projector).
    vidlora::cuda::check_arg(
        linear_1().has_bias() == linear_2().has_bias() && linear_1().out_features() == linear_2().out_features(),
        "cuda::CudaMlp2xGelu", [&] {
          return "a projector whose linears differ in bias or width (linear_1 " +
                 std::to_string(linear_1().in_features()) + " -> " + std::to_string(linear_1().out_features()) +
                 (linear_1().has_bias() ? " with bias" : " without bias") + ", linear_2 " +
                 std::to_string(linear_2().in_features()) + " -> " + std::to_string(linear_2().out_features()) +
                 (linear_2().has_bias() ? " with bias" : " without bias") + ") is not supported";
        });
  }

  // Not a vidlora::Error, which the Trainer takes for a loss that refused NaN logits (a skipped step): a CUDA error in
  // the projector (a failed allocation, launch or copy, a wrong argument, a request over the allocator's cap) stops
  // the run, as DecoderStep<Cuda>'s DeviceFailure does.
  struct DeviceFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  // [tokens, in] -> [tokens, hidden]; keeps x, z and a on the device for backward.
  Matrix forward(const Matrix& x) {
    return guarded([&] {
      run_forward(x);
      return download(y_, shape_.tokens, shape_.hidden);
    });
  }
  // forward, its output left on the device: [tokens, hidden] row-major at the pointer returned, valid until the next
  // forward (the Trainer splices it into the decoder step's input embeddings there: DecoderStep<Cuda>::
  // loss_and_backward_spliced). The same bits as forward's.
  const float* forward_on_device(const Matrix& x) {
    return guarded([&] {
      run_forward(x);
      return static_cast<const float*>(y_.data());
    });
  }

  // apply() on the device, for the evaluation (no backward follows): the weights on the device are those of
  // `values_version` (the Trainer's TrainableTensors::values_version()), uploaded only when it moved. One val clip's
  // projection is ~0.1 TFLOP on the H100 preset's 16 frames (2,304 tokens × 2 × 21 M weights), too much for a host's
  // few cores (a Colab T4 has two) once per clip and epoch.
  Matrix apply_on_device(const Matrix& x, std::uint64_t values_version) {
    return guarded([&] {
      if (uploaded_version_ != values_version) {
        upload_weights();
        uploaded_version_ = values_version;
      }
      run_forward(x, /*upload=*/false);
      return download(y_, shape_.tokens, shape_.hidden);
    });
  }

  // d loss / d y -> d loss / d x; the host's gradients accumulate.
  Matrix backward(const Matrix& dy) {
    return guarded([&] {
      vidlora::cuda::check_arg(ready_ && dy.rows() == shape_.tokens && dy.cols() == shape_.hidden,
                               "cuda::CudaMlp2xGelu::backward",
                               "needs this projector's forward first, and a gradient of its output's shape");
      const vidlora::cuda::DeviceBuffer<float> d = upload_as(dy, "output.grad");
      return download(backward_device(d.data(), /*input_grad=*/true), shape_.tokens, shape_.in);
    });
  }

  // backward for a caller that needs no d loss / d x (the Trainer's features are frozen: it is not computed, which
  // saves the backward's last GEMM and a [tokens, in] buffer), and without the host: d loss / d y is `rows` of
  // `grad`, a [grad_rows, hidden] row-major matrix in device memory (the decoder step's d loss / d input embeddings,
  // DecoderStep<Cuda>::kept_grad_embeds, whose visual-token rows these are), gathered on the device by one copy per
  // run of consecutive rows. The parameter gradients are backward(gather_rows(grad, rows))'s, bit for bit.
  void backward_rows(const float* grad, std::int64_t grad_rows, std::int64_t grad_cols,
                     std::span<const Eigen::Index> rows) {
    guarded([&] { backward_rows_device(grad, grad_rows, grad_cols, rows); });
  }

  // Where a parameter (named by its host gradient's storage: grad_W1, grad_b1, grad_W2, grad_b2) lives on the device,
  // for an optimizer that steps it there; the device weights are allocated (with the host's values) if not yet.
  std::optional<optim::DeviceParameter> device_parameter(const float* grad) {
    return guarded([&] { return find_device_parameter(grad); });
  }

  // The device weights are the values of `values_version` (the optimizer stepped them there): no upload for it.
  void values_current(std::uint64_t values_version) {
    if (w1_.size() != 0) uploaded_version_ = values_version;  // (no device weights yet: the next forward uploads)
  }

  // Gives every device tensor back (to its allocator) and forgets the allocator; the next forward uploads the weights
  // again. For an owner whose allocator goes before the projector does (the Trainer's decoder step).
  void release_device() {
    for (std::size_t i = 0; i < kNames.size(); ++i) {
      *values()[i] = {};
      *grads()[i] = {};
    }
    for (auto* b : {&x_, &z_, &a_, &y_}) *b = {};
    sums_.clear();
    allocator_ = nullptr;
    uploaded_version_.reset();
    ready_ = false;
  }

  // Every device tensor of the projector from `allocator` from now on (the Trainer gives it the decoder step's, so the
  // projector's weights, gradients, sums and activations count under the run's cap and in its memory stats), under
  // tags "multi_modal_projector.*"; null: cudaMalloc. The weights, gradients and sums it holds move there, their
  // values copied. Between steps, before an optimizer takes their addresses (device_parameter).
  void use_allocator(vidlora::cuda::CudaCachingAllocator* allocator) {
    guarded([&] {
      if (allocator == allocator_) return;
      allocator_ = allocator;
      for (std::size_t i = 0; i < kNames.size(); ++i) {
        move_into_allocator(*values()[i], kNames[i]);
        move_into_allocator(*grads()[i], std::string(kNames[i]) + ".grad");
        if (!sums_.empty()) move_into_allocator(sums_[i], std::string(kNames[i]) + ".grad_sum");
      }
      x_ = {};  // the last forward's activations: a backward needs a forward after this
      z_ = {};
      a_ = {};
      y_ = {};
      ready_ = false;
    });
  }

  // A training step's bracket (as train::DecoderStep<Cuda>'s): `values_version` names the parameters' values (the
  // Trainer's TrainableTensors::values_version()), so the weights go to the device once per version; per_clip: each
  // backward's gradients are summed in float64 on the device.
  // Device weights that exist but hold other values are refreshed here, not only at the step's first forward: a rank
  // that runs no clip this step has no forward, yet a device optimizer steps these buffers at its end.
  void begin_step(bool per_clip, std::uint64_t values_version) {
    in_step_ = true;
    per_clip_ = per_clip;
    step_version_ = values_version;
    step_calls_ = 0;
    if (w1_.size() != 0 && uploaded_version_ != values_version)
      guarded([&] {
        upload_weights();
        uploaded_version_ = values_version;
      });
  }
  // The gradients this step sums on the device itself (per_clip): the Trainer's ClipGradientSum leaves them to it.
  bool sums_on_device(const float* grad) {
    if (!in_step_ || !per_clip_) return false;
    for (const float* g : host_gradients())
      if (g != nullptr && g == grad) return true;
    return false;
  }
  // The step's gradients to the host, once: per_clip, the float64 sums copied into sums_of(host gradient) (the
  // Trainer's ClipGradientSum::sums_of) or, without sums_of (no other rank's sums to come), rounded to float32 on the
  // device and added to the host's; else the float32 gradients added to the host's. With `across_ranks`
  // (comm::Nccl) they are summed over the ranks on the device first, also by a rank that ran no clip this step
  // (`what` names the step in its errors).
  // keep_on_device (the optimizer steps on the device, train/device_optimizer.hpp): the step's float32 gradients (the
  // float64 sums rounded) stay in the device buffers device_parameter names; nothing goes to the host.
  void finish_step(const std::function<std::span<double>(const float*)>& sums_of,
                   const comm::DeviceSum& across_ranks = {}, std::string_view what = {}, bool keep_on_device = false) {
    guarded([&] { finish_step_device(sums_of, across_ranks, what, keep_on_device); });
  }

 private:
  void finish_step_device(const std::function<std::span<double>(const float*)>& sums_of,
                          const comm::DeviceSum& across_ranks, std::string_view what, bool keep_on_device) {
    if (!in_step_) return;
    ensure_gradients();
    in_step_ = false;
    if (step_calls_ == 0 && !across_ranks) return;
    const bool f64 = per_clip_;  // the step's gradients are the float64 sums (the float32 buffers hold zeros)
    if (step_calls_ == 0) {      // no clip this step: zeros to sum
      for (auto* g : grads()) g->fill_bytes(0);
      if (f64) {
        ensure_sums();
        for (auto& sum : sums_) sum.fill_bytes(0);
      }
    }
    if (across_ranks) {
      const std::string name =
          what.empty() ? std::string("the step's projector gradients") : std::string(what) + " (projector)";
      if (f64) {
        std::vector<std::span<double>> b;
        for (auto& sum : sums_) b.emplace_back(sum.data(), sum.size());
        across_ranks(std::span<const std::span<double>>(b), name);
      } else {
        std::vector<std::span<float>> b;
        for (auto* g : grads()) b.emplace_back(g->data(), g->size());
        across_ranks(std::span<const std::span<float>>(b), name);
      }
    }
    vidlora::cuda::check_arg(!(keep_on_device && sums_of), "cuda::CudaMlp2xGelu::finish_step",
                             "gradients kept on the device cannot also be summed on the host");
    if (!f64) {
      if (keep_on_device) return;
      return add_gradients_to_host();
    }
    if (!sums_of) {  // no other rank's sums to come: rounded to float32 here (half the bytes to copy, if copied)
      std::size_t i = 0;
      for (auto* g : grads()) {
        vidlora::cuda::round_from_float64(sums_[i].data(), g->data(), static_cast<std::int64_t>(g->size()));
        ++i;
      }
      if (keep_on_device) return;  // the optimizer steps them there
      return add_gradients_to_host();
    }
    const std::vector<float*> host = host_gradients();
    for (std::size_t i = 0; i < host.size(); ++i) {
      if (host[i] == nullptr) continue;
      const std::span<double> into = sums_of(host[i]);
      if (into.empty()) continue;
      sums_[i].download(into);  // the ClipGradientSum leaves this tensor's sums zero for us: copied, not added
    }
  }

  template <class F>
  std::invoke_result_t<F&> guarded(F&& f) {  // declared return type: the public members above call it
    try {
      return f();
    } catch (const vidlora::cuda::CudaError& e) {
      throw DeviceFailure(std::string("cuda::CudaMlp2xGelu: the device projector failed: ") + e.what());
    } catch (const DeviceMemoryError& e) {
      throw DeviceFailure(std::string("cuda::CudaMlp2xGelu: out of device memory: ") + e.what());
    }
  }
  // The four parameters in the order of every list below (tags multi_modal_projector.<name>[.grad, .grad_sum]), their
  // device values and gradients.
  static constexpr std::array<const char*, 4> kNames = {"linear_1.weight", "linear_1.bias", "linear_2.weight",
                                                        "linear_2.bias"};
  std::array<vidlora::cuda::DeviceBuffer<float>*, 4> values() { return {&w1_, &b1_, &w2_, &b2_}; }
  std::array<vidlora::cuda::DeviceBuffer<float>*, 4> grads() { return {&gw1_, &gb1_, &gw2_, &gb2_}; }
  // n values from the projector's allocator (cudaMalloc without one), tagged "multi_modal_projector.<what>".
  template <class T = float>
  vidlora::cuda::DeviceBuffer<T> buffer(std::size_t n, std::string_view what) const {
    return vidlora::cuda::DeviceBuffer<T>(allocator_, n, std::string("multi_modal_projector.") + std::string(what));
  }
  template <class T>
  void move_into_allocator(vidlora::cuda::DeviceBuffer<T>& b, std::string_view what) {
    if (b.size() == 0) return;
    vidlora::cuda::DeviceBuffer<T> moved = buffer<T>(b.size(), what);
    VIDLORA_CUDA_CHECK(cudaMemcpy(moved.data(), b.data(), b.size() * sizeof(T), cudaMemcpyDeviceToDevice));
    b = std::move(moved);
  }
  template <class M>  // a Matrix or a Vector
  vidlora::cuda::DeviceBuffer<float> upload_as(const M& m, std::string_view what) const {
    vidlora::cuda::DeviceBuffer<float> d = buffer(static_cast<std::size_t>(m.size()), what);
    d.upload(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
    return d;
  }
  // The forward into y_ (the weights uploaded first, when `upload`, if this step's version is not on the device yet).
  void run_forward(const Matrix& x, bool upload = true) {
    vidlora::cuda::check_arg(x.cols() == in_features(), "cuda::CudaMlp2xGelu::forward", [&] {
      return "features of " + std::to_string(x.cols()) + " columns for a projector of " + std::to_string(in_features());
    });
    if (upload && (!in_step_ || uploaded_version_ != step_version_)) {
      upload_weights();
      uploaded_version_ = in_step_ ? std::optional<std::uint64_t>(step_version_) : std::nullopt;
    }
    shape_ = {x.rows(), in_features(), out_features(), has_bias()};
    x_ = {};  // the previous forward's, before this one allocates
    z_ = {};
    a_ = {};
    y_ = {};
    x_ = upload_as(x, "input");
    z_ = buffer(static_cast<std::size_t>(shape_.tokens * shape_.hidden), "linear_1.output");
    a_ = buffer(z_.size(), "act.output");
    y_ = buffer(z_.size(), "output");
    detail::CudaProjectorExec exec{*gemm_};
    projector_forward_steps(exec, shape_, weights(), x_.data(), z_.data(), a_.data(), y_.data());
    ready_ = true;
  }
  void backward_rows_device(const float* grad, std::int64_t grad_rows, std::int64_t grad_cols,
                            std::span<const Eigen::Index> rows) {
    vidlora::cuda::check_arg(ready_ && grad != nullptr && grad_cols == shape_.hidden &&
                                 static_cast<std::int64_t>(rows.size()) == shape_.tokens,
                             "cuda::CudaMlp2xGelu::backward_rows", [&] {
                               return "needs this projector's forward first and one row of " +
                                      std::to_string(shape_.hidden) + " gradients per output row (" +
                                      std::to_string(shape_.tokens) + "), got " + std::to_string(rows.size()) +
                                      " rows of " + std::to_string(grad_cols);
                             });
    vidlora::cuda::DeviceBuffer<float> d =
        buffer(static_cast<std::size_t>(shape_.tokens * shape_.hidden), "output.grad");
    const auto width = static_cast<std::size_t>(shape_.hidden);
    for_each_row_run(rows, [&](std::size_t i, std::size_t j) {
      vidlora::cuda::check_arg(rows[i] >= 0 && rows[j - 1] < grad_rows, "cuda::CudaMlp2xGelu::backward_rows", [&] {
        return "rows " + std::to_string(rows[i]) + ".." + std::to_string(rows[j - 1]) + " outside a gradient of " +
               std::to_string(grad_rows) + " rows";
      });
      VIDLORA_CUDA_CHECK(cudaMemcpyAsync(d.data() + i * width, grad + static_cast<std::size_t>(rows[i]) * width,
                                         (j - i) * width * sizeof(float), cudaMemcpyDeviceToDevice, nullptr));
    });
    (void)backward_device(d.data(), /*input_grad=*/false);
  }

  std::optional<optim::DeviceParameter> find_device_parameter(const float* grad) {
    ensure_gradients();
    if (w1_.size() == 0) {
      upload_weights();
      uploaded_version_.reset();
    }
    const std::vector<float*> host = host_gradients();
    for (std::size_t i = 0; i < host.size(); ++i)
      if (host[i] != nullptr && host[i] == grad)
        return optim::DeviceParameter{values()[i]->data(), grads()[i]->data(),
                                      static_cast<std::int64_t>(grads()[i]->size())};
    return std::nullopt;
  }
  bool has_bias() const { return linear_1().has_bias(); }
  // The backward from d loss / d y in device memory: the parameter gradients (to the host, or kept in the step's
  // bracket); returns d loss / d x on the device (with input_grad; else nothing).
  vidlora::cuda::DeviceBuffer<float> backward_device(const float* dy, bool input_grad) {
    ensure_gradients();
    vidlora::cuda::DeviceBuffer<float> da = buffer(z_.size(), "act.output.grad");
    vidlora::cuda::DeviceBuffer<float> dx;
    if (input_grad) dx = buffer(static_cast<std::size_t>(shape_.tokens * shape_.in), "input.grad");
    if (!in_step_ || step_calls_ == 0)  // a step's gradients accumulate from its first backward
      for (auto* g : grads()) g->fill_bytes(0);
    detail::CudaProjectorExec exec{*gemm_};
    projector_backward_steps(exec, shape_, weights(), x_.data(), z_.data(), a_.data(), dy, da.data(),
                             input_grad ? dx.data() : nullptr);
    if (!in_step_) {
      add_gradients_to_host();
    } else {
      if (per_clip_) {  // this clip's gradients into the step's float64 sums; zeroed for the next clip
        ensure_sums();
        std::size_t i = 0;
        for (auto* g : grads())
          vidlora::cuda::take_into_float64(g->data(), sums_[i++].data(), static_cast<std::int64_t>(g->size()),
                                           step_calls_ == 0);
      }
      ++step_calls_;
    }
    return dx;
  }
  // The gradient buffers (their sizes are the parameters'; released by release_device).
  void ensure_gradients() {
    if (gw1_.size() != 0) return;
    const std::array<Eigen::Index, 4> sizes = {linear_1().weight().size(), linear_1().bias().size(),
                                               linear_2().weight().size(), linear_2().bias().size()};
    for (std::size_t i = 0; i < kNames.size(); ++i)
      *grads()[i] = buffer(static_cast<std::size_t>(sizes[i]), std::string(kNames[i]) + ".grad");
  }
  // The float64 sums of grad_W1, grad_b1, grad_W2, grad_b2, allocated at their first use.
  void ensure_sums() {
    if (!sums_.empty()) return;
    ensure_gradients();
    for (std::size_t i = 0; i < kNames.size(); ++i)
      sums_.push_back(buffer<double>(grads()[i]->size(), std::string(kNames[i]) + ".grad_sum"));
  }
  static Matrix download(const vidlora::cuda::DeviceBuffer<float>& b, std::int64_t rows, std::int64_t cols) {
    const std::vector<float> host = b.download();
    return Eigen::Map<const Matrix>(host.data(), rows, cols);
  }
  template <class M>
  static void add_into(M& host, const vidlora::cuda::DeviceBuffer<float>& d) {
    const std::vector<float> g = d.download();
    for (Eigen::Index i = 0; i < host.size(); ++i) host.data()[i] += g[static_cast<std::size_t>(i)];
  }
  // grad_W1, grad_b1, grad_W2, grad_b2 on the host, in the order of the device buffers (null: no bias).
  std::vector<float*> host_gradients() {
    const bool b = has_bias();
    return {linear_1().grad_weight().data(), b ? linear_1().grad_bias().data() : nullptr,
            linear_2().grad_weight().data(), b ? linear_2().grad_bias().data() : nullptr};
  }
  void add_gradients_to_host() {
    add_into(linear_1().grad_weight(), gw1_);
    add_into(linear_2().grad_weight(), gw2_);
    if (has_bias()) {
      add_into(linear_1().grad_bias(), gb1_);
      add_into(linear_2().grad_bias(), gb2_);
    }
  }
  // Into the same device buffers every time (allocated at the first upload): a device optimizer holds their addresses.
  void upload_weights() {
    upload_into(w1_, linear_1().weight(), kNames[0]);
    upload_into(w2_, linear_2().weight(), kNames[2]);
    if (has_bias()) {
      upload_into(b1_, linear_1().bias(), kNames[1]);
      upload_into(b2_, linear_2().bias(), kNames[3]);
    }
  }
  template <class M>
  void upload_into(vidlora::cuda::DeviceBuffer<float>& d, const M& m, std::string_view what) {
    const std::span<const float> h(m.data(), static_cast<std::size_t>(m.size()));
    if (d.size() != h.size()) d = buffer(h.size(), what);
    d.upload(h);
  }
  ProjectorWeights weights() {
    return {w1_.data(), b1_.data(), w2_.data(), b2_.data(), gw1_.data(), gb1_.data(), gw2_.data(), gb2_.data()};
  }

  std::unique_ptr<vidlora::cuda::GemmRunner> gemm_;           // movable: the Trainer takes the projector by value
  vidlora::cuda::CudaCachingAllocator* allocator_ = nullptr;  // use_allocator's; null: cudaMalloc
  vidlora::cuda::DeviceBuffer<float> gw1_, gb1_, gw2_, gb2_;  // zeroed at a step's first backward
  ProjectorShape shape_;
  bool ready_ = false;
  // the training step's bracket
  bool in_step_ = false, per_clip_ = false;
  long step_calls_ = 0;
  std::uint64_t step_version_ = 0;
  std::optional<std::uint64_t> uploaded_version_;          // the values the device weights hold, when known
  std::vector<vidlora::cuda::DeviceBuffer<double>> sums_;  // per_clip: grad_W1, grad_b1, grad_W2, grad_b2 sums
  vidlora::cuda::DeviceBuffer<float> w1_, b1_, w2_, b2_, x_, z_, a_, y_;  // y_: the last forward's output
};

static_assert(Projector<CudaMlp2xGelu>);

}  // namespace vidlora::model::cuda
#endif
