// A downstream user's program: includes the umbrella header and uses a few policies.
#include <vidlora/vidlora.hpp>

#include <cstdio>
#include <cstring>

int main() {
  using Layer = vidlora::LoraLinear<16, 32>;
  vidlora::Matrix w = vidlora::Matrix::Random(32, 24);
  Layer layer(w, vidlora::LoraOptions{.dropout = 0.0, .seed = 1});
  const vidlora::Matrix x = vidlora::Matrix::Random(5, 24);
  const vidlora::Matrix y = layer.forward(x, false);
  // B starts at zero, so the adapted layer equals the frozen one.
  if (!y.isApprox(x * w.transpose())) return 1;
#ifdef VIDLORA_EXPECTED_VERSION  // the installed headers are the version the package file declares
  if (std::strcmp(vidlora::version_string, VIDLORA_EXPECTED_VERSION) != 0) return 2;
#endif
  std::printf("downstream OK: rank %d scaling %g\n", Layer::rank, layer.scaling());
  return 0;
}
