"""Resident warps per SM of a kernel, from its registers per thread, shared memory per block and warps
per block (the CUDA occupancy calculator's rule; CUDA C programming guide, "Compute capabilities").

Used by ``compile_check`` for the Triton kernels and ``cuda_resources`` for the CUDA C++ kernels, so
the report of both says how many warps an SM can keep in flight to hide memory latency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmLimits:
    registers: int  # 32-bit registers per SM
    shared_bytes: int  # shared memory per SM usable by blocks
    max_warps: int
    max_blocks: int
    register_unit: int = 256  # registers are allocated per warp in units of this many
    reserved_shared_per_block: int = 1024  # the runtime keeps 1 KiB of each block's shared memory


#: sm_80 (A100) and sm_90 (H100): 64 Ki registers, 164 / 228 KiB shared memory, 64 warps, 32 blocks.
SM_LIMITS = {
    80: SmLimits(65536, 164 * 1024, 64, 32),
    90: SmLimits(65536, 228 * 1024, 64, 32),
}


def resident_warps(arch: int, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Warps of this kernel an SM of compute capability ``arch`` holds at once (0: it does not fit)."""
    sm = SM_LIMITS[arch]
    per_warp = -(-max(registers, 1) * 32 // sm.register_unit) * sm.register_unit
    by_registers = sm.registers // (per_warp * num_warps)
    by_shared = sm.shared_bytes // (shared_bytes + sm.reserved_shared_per_block)
    blocks = min(by_registers, by_shared, sm.max_warps // num_warps, sm.max_blocks)
    return blocks * num_warps
