// CUDA kernel of torch_utils/ops/bias_act.py: one elementwise pass, arithmetic in float (double for double inputs).
// Each activation's f, f' and f'' are those of the PyTorch functions the reference path uses, so that gradients
// match autograd through the reference (ReLU and leaky ReLU take the s <= 0 branch at s == 0, softplus is linear
// above 20, ELU / SELU use alpha 1 / SELU's constants like torch.nn.functional).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "bias_act.h"
#include "bias_act_kernel.h"

at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g1, const at::Tensor& g2,
                         int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp,
                         bool ref_is_y) {
    at::Tensor out = at::empty_like(x);
    const int64_t numel = x.numel();
    if (numel == 0)
        return out;
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((numel + threads - 1) / threads, int64_t(1) << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        bias_act_kernel::bias_act_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
            out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b.numel() > 0 ? b.data_ptr<scalar_t>() : nullptr,
            mode >= 1 ? g1.data_ptr<scalar_t>() : nullptr, mode == 2 ? g2.data_ptr<scalar_t>() : nullptr, numel,
            x.size(dim) == 1 ? 1 : x.stride(dim), x.size(dim), int(mode), int(act), acc_t(alpha), acc_t(gain),
            acc_t(clamp), ref_is_y);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}
