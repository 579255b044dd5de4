#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/train/early_stopping.hpp>

#include <cmath>
#include <limits>

using namespace vidlora;

TEST_CASE("early stopping counts patience as transformers EarlyStoppingCallback does", "[train][early_stopping]") {
  const auto fixture = test::load_fixture("train/early_stopping.json");
  for (const auto& c : fixture["cases"]) {
    EarlyStopping stopper(EarlyStoppingOptions{.patience = c["patience"].get<int>(),
                                               .threshold = c["threshold"].get<double>(),
                                               .mode = c["mode"] == "max" ? train::Mode::Max : train::Mode::Min});
    const auto scores = c["scores"].get<std::vector<double>>();
    const auto& evals = c["evals"];
    for (std::size_t i = 0; i < evals.size(); ++i) {
      INFO("case with patience " << c["patience"] << " evaluation " << i);
      const long step = 100 * static_cast<long>(i + 1);
      const bool stop = stopper(scores[i], step);
      CHECK(stop == evals[i]["stop"].get<bool>());
      CHECK(stopper.patience_counter() == evals[i]["counter"].get<int>());
      CHECK(*stopper.best_score() == evals[i]["best"].get<double>());
      CHECK(stopper.best_step() == evals[i]["best_step"].get<long>());
    }
  }
}

TEST_CASE("early stopping keeps the best score and step in max mode", "[train][early_stopping]") {
  EarlyStopping stopper({.patience = 2, .threshold = 0.0, .mode = train::Mode::Max});
  CHECK_FALSE(stopper(0.2, 10));
  CHECK(stopper.last_was_best());
  CHECK_FALSE(stopper(0.5, 20));
  CHECK(stopper.last_was_best());
  CHECK_FALSE(stopper(0.4, 30));
  CHECK_FALSE(stopper.last_was_best());
  CHECK(stopper(0.45, 40));
  CHECK(*stopper.best_score() == 0.5);
  CHECK(stopper.best_step() == 20);
  CHECK(stopper.best_evaluation() == 1);
}

TEST_CASE("a NaN evaluation counts against patience and never becomes best", "[train][early_stopping]") {
  EarlyStopping stopper({.patience = 2});
  stopper(1.0, 1);
  CHECK_FALSE(stopper(std::numeric_limits<double>::quiet_NaN(), 2));
  CHECK(stopper.patience_counter() == 1);
  CHECK(stopper(std::numeric_limits<double>::quiet_NaN(), 3));
  CHECK(*stopper.best_score() == 1.0);
}

TEST_CASE("early stopping rejects a patience below one and a negative threshold", "[train][early_stopping]") {
  CHECK_THROWS_WITH(EarlyStopping({.patience = 0}), Catch::Contains("patience must be >= 1, got 0"));
  CHECK_THROWS_WITH(EarlyStopping({.patience = 1, .threshold = -0.5}), Catch::Contains("got -0.5"));
}
