// Python binding and argument checks of the upfirdn2d CUDA kernel (upfirdn2d.cu).
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include "upfirdn2d.h"

static at::Tensor upfirdn2d(at::Tensor x, at::Tensor g, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                            int64_t px0, int64_t py0, int64_t out_h, int64_t out_w) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W]");
    TORCH_CHECK(x.is_floating_point(), "upfirdn2d: x must be floating point");
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(g.dim() == 2 && g.numel() > 0, "upfirdn2d: g must be a non-empty 2-D filter");
    TORCH_CHECK(g.scalar_type() == acc, "upfirdn2d: g must be ", acc == at::kDouble ? "float64" : "float32",
                " for x of dtype ", x.scalar_type());
    TORCH_CHECK(g.device() == x.device(), "upfirdn2d: g must be on x's device");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
    TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: the output must not be empty");
    g = g.contiguous();
    const c10::cuda::CUDAGuard guard(x.device());
    return upfirdn2d_cuda(x, g, upx, upy, downx, downy, px0, py0, out_h, out_w);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample by zero insertion, pad, FIR-filter (correlation) and downsample");
}
