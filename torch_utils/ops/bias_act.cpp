// Python binding and argument checks of the bias_act CUDA kernel (bias_act.cu).
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include "bias_act.h"

static at::Tensor like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
    // The kernel walks every tensor with x's element order, so each must have x's shape and strides.
    TORCH_CHECK(t.sizes() == x.sizes(), "bias_act: ", name, " must have the shape of x");
    TORCH_CHECK(t.dtype() == x.dtype() && t.device() == x.device(), "bias_act: ", name,
                " must have the dtype and device of x");
    if (t.strides() == x.strides())
        return t;
    return at::empty_like(x).copy_(t);
}

static at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor g1, at::Tensor g2, int64_t mode, int64_t dim,
                           int64_t act, double alpha, double gain, double clamp, bool ref_is_y) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_floating_point(), "bias_act: x must be floating point");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2, got ", mode);
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: act must be an activation index in 1..9, got ", act);
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(!ref_is_y || mode == 1, "bias_act: ref_is_y applies to mode 1 only");
    TORCH_CHECK(x.numel() <= (int64_t(1) << 40), "bias_act: x is too large");
    if (!x.is_non_overlapping_and_dense())
        x = x.contiguous();
    if (b.numel() > 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be 1-D of length x.shape[dim]");
        TORCH_CHECK(b.dtype() == x.dtype() && b.device() == x.device(), "bias_act: b must match x's dtype/device");
        b = b.contiguous();
    }
    if (mode >= 1)
        g1 = like_x(g1, x, "g1");
    if (mode == 2)
        g2 = like_x(g2, x, "g2");
    const c10::cuda::CUDAGuard guard(x.device());
    return bias_act_cuda(x, b, g1, g2, mode, dim, act, alpha, gain, clamp, ref_is_y);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its first/second-order gradients");
}
