// The names of the communication phases, as strategies/phases.py gives them: the bytes of a
// run are kept per phase name, so the core's workers must use the same names. The bindings
// export them (_core.PHASES) and the tests hold the two lists equal.
#pragma once

namespace parrbm::phase_name {

inline constexpr const char* kHidden = "hidden";
inline constexpr const char* kNegativeHidden = "negative-hidden";
inline constexpr const char* kVisible = "visible";
inline constexpr const char* kHiddenInput = "hidden-input";
inline constexpr const char* kNegativeHiddenInput = "negative-hidden-input";
inline constexpr const char* kVisibleInput = "visible-input";
inline constexpr const char* kGradient = "gradient";
inline constexpr const char* kAverage = "average";
inline constexpr const char* kWeightSync = "weight-sync";
inline constexpr const char* kGatherPrefix = "gather-";

}  // namespace parrbm::phase_name
