// expect: Exec must name tensor_type, rows_type, saved_type and a backend_policy
// A decoder block runs over an executor that names its backend (backend::Cpu or backend::Cuda); one that names
// another type is rejected with a sentence, not a page of template errors from inside the step list.
#include <vidlora/model/decoder_layer_steps.hpp>

struct NotAnExecutor {
  using tensor_type = int;
  using rows_type = int;
  using saved_type = int;
  using backend_policy = double;  // wrong: not a backend policy
};

int main() {
  NotAnExecutor e;
  int saved = 0;
  return vidlora::model::decoder_layer_forward_steps(e, 0, saved);
}
