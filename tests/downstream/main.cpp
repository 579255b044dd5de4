// A downstream user's program: includes the umbrella header and uses it.
#include <vidlora/vidlora.hpp>

#include <cstdio>

int main() {
  vidlora::CounterRng rng(1);
  const double u = rng.uniform();
  if (!(u >= 0.0 && u < 1.0)) return 1;
  std::printf("downstream OK: rank 16 scaling 2\n");
  return 0;
}
