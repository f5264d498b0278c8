// CUDA kernel of torch_utils/ops/upfirdn2d.py: one thread per output pixel, visiting only the filter taps that land
// on a non-zero sample of the zero-inserted input (every up-th tap along each axis); arithmetic in float (double for
// double inputs). Inputs and outputs are addressed through their strides, so channels_last needs no copy.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "upfirdn2d.h"
#include "upfirdn2d_kernel.h"

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& g, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t py0, int64_t out_h, int64_t out_w) {
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w},
                             x.options().memory_format(x.suggest_memory_format()));
    const int64_t total = y.numel();
    if (total == 0)
        return y;
    const upfirdn2d_kernel::Geometry p = upfirdn2d_kernel::make_geometry(x, y, g, upx, upy, downx, downy, px0, py0);
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        upfirdn2d_kernel::upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
            y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), g.data_ptr<acc_t>(), p, total);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
