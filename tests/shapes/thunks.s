# Hand-written stand-ins for the kernel-style thunks that
# -mindirect-branch=thunk-extern / -mfunction-return=thunk-extern and clang's
# -mretpoline-external-thunk call. Not compiler output: ftail as passes it
# through unchanged.
	.text
	.globl	__x86_return_thunk
	.type	__x86_return_thunk, @function
__x86_return_thunk:
	ret
	int3
	.size	__x86_return_thunk, .-__x86_return_thunk
	.irp reg, rax, rcx, rdx, rbx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15
	.globl	__x86_indirect_thunk_\reg
	.type	__x86_indirect_thunk_\reg, @function
__x86_indirect_thunk_\reg:
	jmp	*%\reg
	.size	__x86_indirect_thunk_\reg, .-__x86_indirect_thunk_\reg
	.globl	__llvm_external_retpoline_\reg
	.type	__llvm_external_retpoline_\reg, @function
__llvm_external_retpoline_\reg:
	jmp	*%\reg
	.size	__llvm_external_retpoline_\reg, .-__llvm_external_retpoline_\reg
	.endr
	.section	.note.GNU-stack,"",@progbits
