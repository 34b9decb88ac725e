#include "textflag.h"

// func transpose8(dst *float32, dstStride int, src *float32, srcStride int, n int)
//
// For r < 8 and p < n (n a multiple of 8): dst[p·dstStride + r] = src[r·srcStride + p].
// Eight source rows are read 8 floats at a time and transposed in registers:
// unpack pairs of rows, shuffle pairs of pairs, then swap 128-bit lanes.
TEXT ·transpose8(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ dstStride+8(FP), DX
	MOVQ src+16(FP), SI
	MOVQ srcStride+24(FP), BX
	MOVQ n+32(FP), CX
	SHLQ $2, DX              // strides in bytes
	SHLQ $2, BX
	LEAQ (BX)(BX*2), AX      // 3 source rows
	LEAQ (SI)(BX*4), R9      // source row 4
	LEAQ (DX)(DX*2), R10     // 3 destination rows
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(BX*1), Y1
	VMOVUPS (SI)(BX*2), Y2
	VMOVUPS (SI)(AX*1), Y3
	VMOVUPS (R9), Y4
	VMOVUPS (R9)(BX*1), Y5
	VMOVUPS (R9)(BX*2), Y6
	VMOVUPS (R9)(AX*1), Y7

	// Yi holds row i, p = 0..7; after unpacking, Y8 holds
	// r0p0 r1p0 r0p1 r1p1 | r0p4 r1p4 r0p5 r1p5, and so on.
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	// Now Y0 = r0..r3 at p0 | p4, Y1 at p1 | p5, Y2 at p2 | p6, Y3 at
	// p3 | p7, and Y4..Y7 the same for rows 4..7.
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	// Join the low lanes (p0..p3) and the high lanes (p4..p7).
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	LEAQ    (DI)(DX*4), R11
	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(DX*1)
	VMOVUPS Y10, (DI)(DX*2)
	VMOVUPS Y11, (DI)(R10*1)
	VMOVUPS Y12, (R11)
	VMOVUPS Y13, (R11)(DX*1)
	VMOVUPS Y14, (R11)(DX*2)
	VMOVUPS Y15, (R11)(R10*1)

	ADDQ $32, SI
	ADDQ $32, R9
	LEAQ (R11)(DX*4), DI
	DECQ CX
	JNZ  loop

done:
	VZEROUPPER
	RET
