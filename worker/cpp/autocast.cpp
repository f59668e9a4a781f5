// libtorch's autocast for any device type. tch 0.24 binds only the deprecated CUDA-only entry
// points (at::autocast::set_enabled), so bf16 autocast on the CPU, and a chosen dtype on CUDA,
// need these few lines. They declare the functions rather than include
// <ATen/autocast_mode.h>, which pulls in all of ATen and would add a minute to every cold build.
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/macros/Export.h>

#include <exception>

namespace at::autocast {
TORCH_API bool is_autocast_enabled(c10::DeviceType device_type);
TORCH_API void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
TORCH_API c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
TORCH_API void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
}  // namespace at::autocast

extern "C" {

// Each returns 0 on success and -1 if libtorch threw (an unsupported device or dtype).

int orchestra_autocast_get(int device_type, int* enabled, int* dtype) {
  try {
    auto d = static_cast<c10::DeviceType>(device_type);
    *enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}

int orchestra_autocast_set(int device_type, int enabled, int dtype) {
  try {
    auto d = static_cast<c10::DeviceType>(device_type);
    at::autocast::set_autocast_dtype(d, static_cast<c10::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(d, enabled != 0);
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}

int orchestra_autocast_enter() { return at::autocast::increment_nesting(); }

// Leaving the outermost region frees the casts of the weights it cached.
int orchestra_autocast_exit() {
  int depth = at::autocast::decrement_nesting();
  if (depth == 0) {
    at::autocast::clear_cache();
  }
  return depth;
}

}  // extern "C"
