; hvops.kvm test guest: a tiny BIOS-booted program for QEMU's pc (i440FX/PIIX4)
; and q35 (ICH9) machines. See README.md beside this file.
;
; Build with exactly one of -DVARIANT_NORMAL, -DVARIANT_STUBBORN or
; -DVARIANT_DIRTY (the last optionally with -DDIRTY_MIB=N), e.g.
;   nasm -f bin -DVARIANT_DIRTY -DDIRTY_MIB=64 -o dirty.img guest.asm
;
; Serial (COM1, 115200 8N1, CRLF line ends):
;   hvops-guest variant=NAME start=N pm=0xPPPP [dirty_mib=M]
;   tick N
;   tick N+1            (one line per BIOS timer tick, about 18.2 a second)
;   ...
;   powerdown           (ACPI power button seen; the guest then powers off)
;
; Layout: sector 0 is the boot sector the BIOS loads at 0000:7C00. It reads
; the rest of the program (sectors 1..) to 0000:7E00 with int 13h and jumps
; there. The image is padded to IMAGE_SIZE bytes.

%ifdef VARIANT_NORMAL
  %define VARIANT_NAME 'normal'
  %define HONOUR_POWER_BUTTON
%elifdef VARIANT_STUBBORN
  %define VARIANT_NAME 'stubborn'
%elifdef VARIANT_DIRTY
  %define VARIANT_NAME 'dirty'
  %define HONOUR_POWER_BUTTON
  %ifndef DIRTY_MIB
    %define DIRTY_MIB 64
  %endif
  %if DIRTY_MIB < 1 || DIRTY_MIB > 2048
    %error "DIRTY_MIB must be 1..2048"
  %endif
%else
  %error "define one of VARIANT_NORMAL, VARIANT_STUBBORN, VARIANT_DIRTY"
%endif

COM1            equ 0x3F8
BDA_TICKS       equ 0x046C          ; BIOS tick counter (dword), 0040:006C
IMAGE_SIZE      equ 0x100000        ; whole image: 1 MiB (see README.md)
LOAD_SECTORS    equ 7               ; sectors after the boot sector to load
PM1_PWRBTN      equ 0x0100          ; PWRBTN_STS in PM1_STS, PWRBTN_EN in PM1_EN
SLP_EN_S5       equ 0x2000          ; PM1_CNT: SLP_EN with SLP_TYP 0 (soft off)
DIRTY_BASE      equ 0x200000        ; dirtying starts at 2 MiB
CHUNK           equ 0x100000        ; bytes of the area per protected-mode visit

        bits 16
        org 0x7C00

; ---------------------------------------------------------------- sector 0
boot:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7C00
        jmp 0:.cs_zero                  ; some BIOSes enter at 07C0:0000
.cs_zero:
        sti
        cld
        mov si, dap                     ; DL: the boot drive, from the BIOS
        mov ah, 0x42                    ; extended read (LBA)
        int 0x13
        jc .load_failed
        jmp main
.load_failed:                           ; nothing better to do than to say so
        mov si, msg_load_failed
        call serial_init
        call print
.halt:
        hlt
        jmp .halt

; Disk address packet for int 13h AH=42h.
dap:
        db 16, 0
        dw LOAD_SECTORS
        dw 0x7E00, 0                    ; destination offset:segment
        dq 1                            ; first LBA

; COM1: no interrupts, 115200 baud, 8N1, FIFO on, DTR+RTS.
serial_init:
        push si
        mov si, uart_setup
.next:
        lodsw                           ; al = register offset, ah = value
        cmp al, 0xFF
        je .done
        mov dx, COM1
        add dl, al
        mov al, ah
        out dx, al
        jmp .next
.done:
        pop si
        ret

uart_setup:
        db 1, 0x00                      ; IER: no interrupts
        db 3, 0x80                      ; LCR: DLAB
        db 0, 0x01                      ; DLL: divisor 1 = 115200
        db 1, 0x00                      ; DLM
        db 3, 0x03                      ; LCR: 8N1
        db 2, 0x07                      ; FCR: FIFO on, cleared
        db 4, 0x03                      ; MCR: DTR, RTS
        db 0xFF, 0

; Print the NUL-terminated string at DS:SI.
print:
        lodsb
        test al, al
        jz .done
        call putc
        jmp print
.done:
        ret

; Send AL to COM1. The wait for an empty transmitter is bounded, so a serial
; line nobody drains can drop characters but never stops the guest.
putc:
        push cx
        push dx
        push ax
        mov dx, COM1 + 5                ; LSR
        mov cx, 0xFFFF
.wait:
        in al, dx
        test al, 0x20                   ; THRE
        jnz .ready
        loop .wait
.ready:
        pop ax
        mov dx, COM1
        out dx, al
        pop dx
        pop cx
        ret

msg_load_failed: db 'hvops-guest: int 13h load failed', 13, 10, 0

        times 510 - ($ - $$) db 0
        dw 0xAA55

; ------------------------------------------------------- sectors 1 and on
main:
        call serial_init
        call find_pm_base
        mov [pm_base], ax

%ifdef HONOUR_POWER_BUTTON
        test ax, ax
        jz .no_button
        mov dx, ax                      ; PM1_STS: clear a stale PWRBTN_STS
        mov ax, PM1_PWRBTN
        out dx, ax
        add dx, 2                       ; PM1_EN: enable the power button
        in ax, dx
        or ax, PM1_PWRBTN
        out dx, ax
.no_button:
%endif

%ifdef VARIANT_DIRTY
        call size_dirty_area
%endif

        ; A start value that differs from boot to boot: the TSC, mixed.
        rdtsc
        xor eax, edx
        mov edx, eax
        shr edx, 16
        xor eax, edx
        imul eax, eax, 0x045D9F3B
        mov edx, eax
        shr edx, 16
        xor eax, edx
        and eax, 0x000FFFFF             ; 0 .. 1048575
        mov [counter], eax

        mov ax, [BDA_TICKS]
        mov [seen], ax

        mov si, msg_banner
        call print
        mov eax, [counter]
        call print_dec
        mov si, msg_pm
        call print
        mov ax, [pm_base]
        call print_hex16
%ifdef VARIANT_DIRTY
        mov si, msg_dirty_mib
        call print
        movzx eax, word [dirty_mib]
        call print_dec
%endif
        mov si, msg_crlf
        call print
        call print_tick

main_loop:
        ; One "tick" line per BIOS timer tick; if ticks were missed, catch up
        ; one line at a time. A big jump (midnight wrap) counts as one tick.
        mov ax, [BDA_TICKS]
        mov bx, [seen]
        cmp ax, bx
        je .no_tick
        sub ax, bx
        cmp ax, 64
        jbe .step
        mov bx, [BDA_TICKS]
        dec bx
.step:
        inc bx
        mov [seen], bx
        inc dword [counter]
        call print_tick
        jmp main_loop
.no_tick:

%ifdef HONOUR_POWER_BUTTON
        mov dx, [pm_base]
        test dx, dx
        jz .no_power
        in ax, dx                       ; PM1_STS
        test ax, PM1_PWRBTN
        jz .no_power
        mov si, msg_powerdown
        call print
        add dx, 4                       ; PM1_CNT
        mov ax, SLP_EN_S5
        out dx, ax
        cli
.off:
        hlt
        jmp .off
.no_power:
%endif

%ifdef VARIANT_DIRTY
        call dirty_chunk
%else
        hlt                             ; until the next interrupt (timer)
%endif
        jmp main_loop

; "tick N" CRLF for N = [counter].
print_tick:
        mov si, msg_tick
        call print
        mov eax, [counter]
        call print_dec
        mov si, msg_crlf
        jmp print

; Print EAX as unsigned decimal.
print_dec:
        mov ecx, 10
        xor bx, bx
.divide:
        xor edx, edx
        div ecx
        push dx
        inc bx
        test eax, eax
        jnz .divide
.emit:
        pop ax
        add al, '0'
        call putc
        dec bx
        jnz .emit
        ret

; Print AX as 0xHHHH.
print_hex16:
        mov bx, ax
        mov al, '0'
        call putc
        mov al, 'x'
        call putc
        mov cx, 4
.digit:
        rol bx, 4
        mov al, bl
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe .out
        add al, 'a' - '0' - 10
.out:
        call putc
        loop .digit
        ret

; Read PCI config dword EAX (a 0xCF8 address) into EAX.
pci_read:
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        ret

; AX = ACPI PM I/O base, or 0 if neither chipset is found.
; pc:  PIIX4 PM, 00:01.3, register 0x40 (PMBA), bits 15:6.
; q35: ICH9 LPC, 00:1f.0, register 0x40 (PMBASE), bits 15:7.
find_pm_base:
        mov eax, 0x80000B00
        call pci_read
        cmp eax, 0x71138086
        jne .not_piix4
        mov eax, 0x80000B40
        call pci_read
        and ax, 0xFFC0
        ret
.not_piix4:
        mov eax, 0x8000F800
        call pci_read
        cmp eax, 0x29188086
        jne .none
        mov eax, 0x8000F840
        call pci_read
        and ax, 0xFF80
        ret
.none:
        xor ax, ax
        ret

%ifdef VARIANT_DIRTY
; dirty_mib = min(DIRTY_MIB, RAM top - 3 MiB) (at least 1), from int 15h E801,
; so the area stays in RAM and clear of the BIOS's tables at its top.
size_dirty_area:
        mov word [dirty_mib], DIRTY_MIB
        xor cx, cx
        xor dx, dx
        mov ax, 0xE801
        int 0x15
        jc .done                        ; unknown: trust the build option
        test ax, ax
        jnz .have
        mov ax, cx                      ; some BIOSes answer in CX/DX only
        mov bx, dx
.have:
        test bx, bx
        jz .below_16m
        shr bx, 4                       ; 64 KiB blocks above 16 MiB -> MiB
        add bx, 16
        jmp .top
.below_16m:
        shr ax, 10                      ; KiB above 1 MiB -> MiB
        inc ax
        mov bx, ax
.top:                                   ; BX = RAM top in MiB
        sub bx, 3
        jg .positive
        mov bx, 1
.positive:
        cmp bx, DIRTY_MIB
        jae .done
        mov [dirty_mib], bx
.done:
        movzx eax, word [dirty_mib]
        shl eax, 20
        add eax, DIRTY_BASE
        mov [dirty_end], eax
        ret

; Dirty the next CHUNK bytes of the area in 32-bit protected mode, with
; interrupts off, then come back to real mode, where the BIOS's interrupt
; handlers run as usual. One dword in every 4 KiB page is written, which is
; enough to dirty the page and change its contents, and cheap enough that
; passes over the area follow each other quickly even where the CPU is
; emulated. Each write stores (address XOR pass tag); after a whole pass the
; tag changes and the dword offset within the page moves on (by 68 bytes,
; so over 1024 passes every dword of every page is rewritten).
dirty_chunk:
        cli
        lgdt [gdt_descriptor]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp 0x08:.pm32
        bits 32
.pm32:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov edi, [cursor]               ; page-aligned
        lea ecx, [edi + CHUNK]
        mov ebx, [tag]
        mov esi, [page_offset]
.write:
        mov eax, edi
        xor eax, ebx
        mov [edi + esi], eax
        add edi, 4096
        cmp edi, ecx
        jb .write
        cmp edi, [dirty_end]
        jb .keep
        mov edi, DIRTY_BASE             ; pass done: next tag, next offset
        add dword [tag], 0x9E3779B9
        add esi, 68
        and esi, 0xFFC
        mov [page_offset], esi
.keep:
        mov [cursor], edi
        jmp 0x18:.pm16
        bits 16
.pm16:
        mov ax, 0x20
        mov ds, ax
        mov es, ax
        mov eax, cr0
        and al, 0xFE
        mov cr0, eax
        jmp 0:.real
.real:
        xor ax, ax
        mov ds, ax
        mov es, ax
        sti
        ret

        align 8
gdt:
        dq 0
        dq 0x00CF9A000000FFFF           ; 0x08: code, 32-bit, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: data, 32-bit, base 0, 4 GiB
        dq 0x00009A000000FFFF           ; 0x18: code, 16-bit, base 0, 64 KiB
        dq 0x000092000000FFFF           ; 0x20: data, 16-bit, base 0, 64 KiB
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt

cursor:    dd DIRTY_BASE
dirty_end: dd DIRTY_BASE + DIRTY_MIB * 0x100000
tag:       dd 0x5EED0001
page_offset: dd 0
dirty_mib: dw DIRTY_MIB
msg_dirty_mib: db ' dirty_mib=', 0
%endif

msg_banner:    db 'hvops-guest variant=', VARIANT_NAME, ' start=', 0
msg_pm:        db ' pm=', 0
msg_tick:      db 'tick ', 0
msg_powerdown: db 'powerdown'
msg_crlf:      db 13, 10, 0

        align 4
counter:   dd 0
seen:      dw 0
pm_base:   dw 0

program_end:
%if program_end - $$ > 512 * (1 + LOAD_SECTORS)
  %error "program is longer than the sectors the boot sector loads"
%endif
        times IMAGE_SIZE - ($ - $$) db 0
