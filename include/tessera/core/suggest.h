// "Did you mean": the nearest valid names to a misspelt one, for every interface's unknown-name errors.
#pragma once
#include <string>
#include <vector>

namespace tessera {

// The candidates within a small edit distance of `word` (at most a third of its length, at least 2),
// nearest first; empty when none is close.
std::vector<std::string> nearest_names(const std::string& word, const std::vector<std::string>& candidates);

// "; did you mean X?" (or "X or Y?") with the nearest names, or "" when none is close: appended to an
// unknown-name error.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace tessera
