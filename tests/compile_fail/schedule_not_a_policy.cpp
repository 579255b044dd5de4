// expect: is not a learning-rate policy
// Scheduler<Policy> only takes an LrPolicy; anything else is rejected with a readable static_assert.
#include <vidlora/schedule.hpp>

struct NotAPolicy {
  double lr(long step) const { return 1e-4; }  // not a static member, no name, no validate
};

int main() {
  vidlora::ScheduleOptions options{};
  options.total_steps = 10;
  const vidlora::Scheduler<NotAPolicy> scheduler(options);
  return static_cast<int>(scheduler.lr(0));
}
