#pragma once
// vidlora train: early stopping (the two-stage Trainer arrives with the model module).

#include <vidlora/train/early_stopping.hpp>
