#pragma once
// cuda::CudaMlp2xGelu: the Trainer's projector type for a GPU preset. A model::Mlp2xGelu (its parameters and
// gradients stay the host's, so AdamW, checkpoints and the saved projector are unchanged) whose forward and backward
// run on the device by model/cuda/projector.cuh's steps: the weights are uploaded at every forward (the optimizer may
// have changed them since), the gradients come back and are added to the host's at every backward, and apply()
// (evaluation) stays the host's. Needs nvcc and vidlora::cuda (it includes fmt through model/projector.hpp).

#include <vidlora/model/cuda/projector.cuh>

#if defined(__CUDACC__)
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/model/projector.hpp>

namespace vidlora::model::cuda {

class CudaMlp2xGelu : public Mlp2xGelu {
 public:
  // The gradient buffers take the parameters' sizes, which never change: allocated once, here.
  explicit CudaMlp2xGelu(Mlp2xGelu host)
      : Mlp2xGelu(std::move(host)),
        gemm_(std::make_unique<vidlora::cuda::GemmRunner>()),
        gw1_(static_cast<std::size_t>(linear_1().weight().size())),
        gb1_(static_cast<std::size_t>(linear_1().bias().size())),
        gw2_(static_cast<std::size_t>(linear_2().weight().size())),
        gb2_(static_cast<std::size_t>(linear_2().bias().size())) {}

  // [tokens, in] -> [tokens, hidden]; keeps x, z and a on the device for backward.
  Matrix forward(const Matrix& x) {
    vidlora::cuda::check_arg(
        x.cols() == in_features(), "cuda::CudaMlp2xGelu::forward",
        "features of " + std::to_string(x.cols()) + " columns for a projector of " + std::to_string(in_features()));
    upload_weights();
    shape_ = {x.rows(), in_features(), out_features(), has_bias()};
    x_ = upload(x);
    z_ = vidlora::cuda::DeviceBuffer<float>(static_cast<std::size_t>(shape_.tokens * shape_.hidden));
    a_ = vidlora::cuda::DeviceBuffer<float>(z_.size());
    vidlora::cuda::DeviceBuffer<float> y(z_.size());
    detail::CudaProjectorExec exec{*gemm_};
    projector_forward_steps(exec, shape_, weights(), x_.data(), z_.data(), a_.data(), y.data());
    ready_ = true;
    return download(y, shape_.tokens, shape_.hidden);
  }

  // d loss / d y -> d loss / d x; the host's gradients accumulate.
  Matrix backward(const Matrix& dy) {
    vidlora::cuda::check_arg(ready_ && dy.rows() == shape_.tokens && dy.cols() == shape_.hidden,
                             "cuda::CudaMlp2xGelu::backward",
                             "needs this projector's forward first, and a gradient "
                             "of its output's shape");
    const vidlora::cuda::DeviceBuffer<float> d = upload(dy);
    vidlora::cuda::DeviceBuffer<float> da(z_.size()), dx(static_cast<std::size_t>(shape_.tokens * shape_.in));
    for (auto* g : {&gw1_, &gb1_, &gw2_, &gb2_}) g->fill_bytes(0);
    detail::CudaProjectorExec exec{*gemm_};
    projector_backward_steps(exec, shape_, weights(), x_.data(), z_.data(), a_.data(), d.data(), da.data(), dx.data());
    add_into(linear_1().grad_weight(), gw1_);
    add_into(linear_2().grad_weight(), gw2_);
    if (shape_.bias) {
      add_into(linear_1().grad_bias(), gb1_);
      add_into(linear_2().grad_bias(), gb2_);
    }
    return download(dx, shape_.tokens, shape_.in);
  }

 private:
  bool has_bias() const { return linear_1().has_bias(); }
  template <class M>  // a Matrix or a Vector
  static vidlora::cuda::DeviceBuffer<float> upload(const M& m) {
    return vidlora::cuda::DeviceBuffer<float>(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
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
  void upload_weights() {
    w1_ = upload(linear_1().weight());
    w2_ = upload(linear_2().weight());
    if (has_bias()) {
      b1_ = upload(linear_1().bias());
      b2_ = upload(linear_2().bias());
    }
  }
  ProjectorWeights weights() {
    return {w1_.data(), b1_.data(), w2_.data(), b2_.data(), gw1_.data(), gb1_.data(), gw2_.data(), gb2_.data()};
  }

  std::unique_ptr<vidlora::cuda::GemmRunner> gemm_;           // movable: the Trainer takes the projector by value
  vidlora::cuda::DeviceBuffer<float> gw1_, gb1_, gw2_, gb2_;  // zeroed at each backward, then added to the host's
  ProjectorShape shape_;
  bool ready_ = false;
  vidlora::cuda::DeviceBuffer<float> w1_, b1_, w2_, b2_, x_, z_, a_;
};

static_assert(Projector<CudaMlp2xGelu>);

}  // namespace vidlora::model::cuda
#endif
