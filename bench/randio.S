# randio PATH COUNT r|w : COUNT 4 KiB O_DIRECT preads (r) or pwrites (w) at xorshift64-random
# 4 KiB-aligned offsets of PATH, one at a time (QD1). Exit 0, or 1 on any error or short I/O.
# Linux x86-64, no libc. Build: as randio.S -o randio.o && ld -static -n -s randio.o -o randio
        .intel_syntax noprefix
        .globl _start
        .text
_start:
        mov     rdi, [rsp+16]           # argv[1]: path
        mov     r12, [rsp+24]           # argv[2]: count (decimal)
        mov     r13, [rsp+32]           # argv[3]: "r" or "w"
        xor     r14, r14
1:      movzx   eax, byte ptr [r12]
        test    al, al
        jz      2f
        sub     eax, '0'
        imul    r14, r14, 10
        add     r14, rax
        inc     r12
        jmp     1b
2:      movzx   r15d, byte ptr [r13]
        mov     esi, 0x4000             # O_RDONLY|O_DIRECT
        cmp     r15b, 'w'
        jne     3f
        mov     esi, 0x4002             # O_RDWR|O_DIRECT
3:      xor     edx, edx
        mov     eax, 2                  # open
        syscall
        test    rax, rax
        js      fail
        mov     rbx, rax
        mov     rdi, rbx
        xor     esi, esi
        mov     edx, 2                  # SEEK_END: the size
        mov     eax, 8                  # lseek
        syscall
        shr     rax, 12
        mov     rbp, rax                # 4 KiB blocks
        test    rbp, rbp
        jz      fail
        movabs  r12, 0x9E3779B97F4A7C15 # xorshift64 state
next:   test    r14, r14
        jz      done
        mov     rax, r12
        shl     rax, 13
        xor     r12, rax
        mov     rax, r12
        shr     rax, 7
        xor     r12, rax
        mov     rax, r12
        shl     rax, 17
        xor     r12, rax
        mov     rax, r12
        xor     edx, edx
        div     rbp
        shl     rdx, 12
        mov     r10, rdx                # offset
        mov     rdi, rbx
        lea     rsi, [rip+buf]
        mov     edx, 4096
        mov     eax, 17                 # pread64
        cmp     r15b, 'w'
        jne     4f
        mov     eax, 18                 # pwrite64
4:      syscall
        cmp     rax, 4096
        jne     fail
        dec     r14
        jmp     next
done:   xor     edi, edi
        mov     eax, 60
        syscall
fail:   mov     edi, 1
        mov     eax, 60
        syscall
        .bss
        .balign 4096
buf:    .skip   4096
