# gcc 12 -O2 output of the C program below, with the one shape a large C
# server's build showed that this small program does not make gcc emit:
# the cold part jumps back to the label at the very end of the hot part,
# right after the call of a noreturn function (`jmp .L9`). The target is
# the function's own end, not another function.
#
# /* A function whose hot part ends with a call of a noreturn function,
#  * with a cold part (a call of a cold function). */
# #include <stdio.h>
# #include <stdlib.h>
#
# __attribute__((cold, noinline)) void report(const char *msg, int n) { fprintf(stderr, "%s: %d\n", msg, n); }
# __attribute__((noreturn, noinline)) void fail(const char *msg) { fprintf(stderr, "%s\n", msg); exit(3); }
#
# __attribute__((noinline)) int check(int *p, int n) {
#     if (n > 3)
#         return p[0] + n;
#     if (__builtin_expect(n < 0, 0))
#         report("negative", n);
#     else
#         fail("small");
#     __builtin_unreachable();
# }
#
# int main(void) {
#     int a[2] = { 5, 6 };
#     printf("%d\n", check(a, 4) + check(a, 9));
#     return 0;
# }
	.file	"cold_end.c"
	.text
	.section	.rodata.str1.1,"aMS",@progbits,1
.LC0:
	.string	"%s: %d\n"
	.section	.text.unlikely,"ax",@progbits
	.globl	report
	.type	report, @function
report:
.LFB22:
	.cfi_startproc
	movq	%rdi, %rdx
	movq	stderr(%rip), %rdi
	movl	%esi, %ecx
	xorl	%eax, %eax
	leaq	.LC0(%rip), %rsi
	jmp	fprintf@PLT
	.cfi_endproc
.LFE22:
	.size	report, .-report
	.section	.rodata.str1.1
.LC1:
	.string	"%s\n"
	.text
	.p2align 4
	.globl	fail
	.type	fail, @function
fail:
.LFB23:
	.cfi_startproc
	subq	$8, %rsp
	.cfi_def_cfa_offset 16
	movq	%rdi, %rdx
	movq	stderr(%rip), %rdi
	xorl	%eax, %eax
	leaq	.LC1(%rip), %rsi
	call	fprintf@PLT
	movl	$3, %edi
	call	exit@PLT
	.cfi_endproc
.LFE23:
	.size	fail, .-fail
	.section	.rodata.str1.1
.LC2:
	.string	"negative"
.LC3:
	.string	"small"
	.section	.text.unlikely
.LCOLDB4:
	.text
.LHOTB4:
	.p2align 4
	.globl	check
	.type	check, @function
check:
.LFB24:
	.cfi_startproc
	cmpl	$3, %esi
	jle	.L14
	movl	(%rdi), %eax
	addl	%esi, %eax
	ret
.L14:
	pushq	%rax
	.cfi_def_cfa_offset 16
	testl	%esi, %esi
	js	.L8
	leaq	.LC3(%rip), %rdi
	call	fail
.L9:
	.cfi_endproc
	.section	.text.unlikely
	.cfi_startproc
	.type	check.cold, @function
check.cold:
.LFSB24:
.L8:
	.cfi_def_cfa_offset 16
	leaq	.LC2(%rip), %rdi
	call	report
	jmp	.L9
	.cfi_endproc
.LFE24:
	.text
	.size	check, .-check
	.section	.text.unlikely
	.size	check.cold, .-check.cold
.LCOLDE4:
	.text
.LHOTE4:
	.section	.rodata.str1.1
.LC6:
	.string	"%d\n"
	.section	.text.startup,"ax",@progbits
	.p2align 4
	.globl	main
	.type	main, @function
main:
.LFB25:
	.cfi_startproc
	pushq	%rbp
	.cfi_def_cfa_offset 16
	.cfi_offset 6, -16
	movl	$4, %esi
	pushq	%rbx
	.cfi_def_cfa_offset 24
	.cfi_offset 3, -24
	subq	$24, %rsp
	.cfi_def_cfa_offset 48
	movq	.LC5(%rip), %rax
	leaq	8(%rsp), %rbp
	movq	%rbp, %rdi
	movq	%rax, 8(%rsp)
	call	check
	movq	%rbp, %rdi
	movl	$9, %esi
	movl	%eax, %ebx
	call	check
	leaq	.LC6(%rip), %rdi
	leal	(%rbx,%rax), %esi
	xorl	%eax, %eax
	call	printf@PLT
	addq	$24, %rsp
	.cfi_def_cfa_offset 24
	xorl	%eax, %eax
	popq	%rbx
	.cfi_def_cfa_offset 16
	popq	%rbp
	.cfi_def_cfa_offset 8
	ret
	.cfi_endproc
.LFE25:
	.size	main, .-main
	.section	.rodata.cst8,"aM",@progbits,8
	.align 8
.LC5:
	.long	5
	.long	6
	.ident	"GCC: (Debian 12.2.0-14+deb12u1) 12.2.0"
	.section	.note.GNU-stack,"",@progbits
