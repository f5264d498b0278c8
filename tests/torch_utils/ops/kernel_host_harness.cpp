// Test harness: the CUDA kernels of torch_utils/ops (bias_act_kernel.h, upfirdn2d_kernel.h) compiled for the host.
// The CUDA keywords become plain C++ and a launch becomes one call with a single "thread" whose grid-stride loop
// covers every element, so the kernels' own arithmetic and indexing run on CPU tensors. The two functions have the
// contract of the plugins' Python bindings (bias_act.cpp, upfirdn2d.cpp), so a test can install this module as the
// plugin and run the real self-check and dispatch path against it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#define __global__
#define __device__
#define __forceinline__ inline

namespace {
struct Index { unsigned x; };
const Index blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};
}  // namespace

#include "bias_act_kernel.h"
#include "upfirdn2d_kernel.h"

static at::Tensor like_x(const at::Tensor& t, const at::Tensor& x) {
    TORCH_CHECK(t.sizes() == x.sizes() && t.dtype() == x.dtype(), "harness: gradient must match x");
    return t.strides() == x.strides() ? t : at::empty_like(x).copy_(t);
}

static at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor g1, at::Tensor g2, int64_t mode, int64_t dim,
                           int64_t act, double alpha, double gain, double clamp, bool ref_is_y) {
    TORCH_CHECK(x.device().is_cpu(), "harness: CPU tensors only");
    if (!x.is_non_overlapping_and_dense())
        x = x.contiguous();
    if (b.numel() > 0)
        b = b.contiguous();
    if (mode >= 1)
        g1 = like_x(g1, x);
    if (mode == 2)
        g2 = like_x(g2, x);
    at::Tensor out = at::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_host", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        bias_act_kernel::bias_act_kernel<scalar_t>(
            out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b.numel() > 0 ? b.data_ptr<scalar_t>() : nullptr,
            mode >= 1 ? g1.data_ptr<scalar_t>() : nullptr, mode == 2 ? g2.data_ptr<scalar_t>() : nullptr, x.numel(),
            x.size(dim) == 1 ? 1 : x.stride(dim), x.size(dim), int(mode), int(act), acc_t(alpha), acc_t(gain),
            acc_t(clamp), ref_is_y);
    });
    return out;
}

static at::Tensor upfirdn2d(at::Tensor x, at::Tensor g, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                            int64_t px0, int64_t py0, int64_t out_h, int64_t out_w) {
    TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && g.dim() == 2, "harness: 4-D CPU x and 2-D g only");
    g = g.contiguous();
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w},
                             x.options().memory_format(x.suggest_memory_format()));
    const upfirdn2d_kernel::Geometry p = upfirdn2d_kernel::make_geometry(x, y, g, upx, upy, downx, downy, px0, py0);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_host", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        TORCH_CHECK(g.scalar_type() == c10::CppTypeToScalarType<acc_t>::value, "harness: g in the arithmetic type");
        upfirdn2d_kernel::upfirdn2d_kernel<scalar_t>(y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                     g.data_ptr<acc_t>(), p, y.numel());
    });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act);
    m.def("upfirdn2d", &upfirdn2d);
}
