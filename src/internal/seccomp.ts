/**
 * The default seccomp filter for the bubblewrap sandbox, as the classic-BPF bytes `bwrap --seccomp FD` reads:
 * an array of `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }` in host byte order (little-endian on both
 * arches we support). bwrap loads it with `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)` just before execve.
 *
 * The filter refuses syscalls that reach kernel attack surface or escape the sandbox (mounts, namespaces, ptrace and
 * its relatives, keyrings, bpf, io_uring, modules, ...), a few by argument (namespace flags, personalities, VM
 * sockets), and allows everything else: a deny list, so ordinary programs are unaffected.
 */

export type SeccompArch = "x86_64" | "aarch64"

/** The seccomp arch of this Node process (process.arch "x64" -> "x86_64", "arm64" -> "aarch64"), undefined for any other. */
export const hostSeccompArch = (): SeccompArch | undefined =>
  process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : undefined

/** Refused whatever their arguments. Every one exists on both arches (aarch64 lacks only legacy calls, none listed). */
const denied = [
  // ptrace and the calls that need the same access to another process: its memory, its descriptors, its kernel objects.
  "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
  "mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree",
  "mount_setattr", "setns",
  "keyctl", "add_key", "request_key",
  "bpf", "perf_event_open", "userfaultfd",
  "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
  "io_uring_setup", "io_uring_enter", "io_uring_register",
  "open_by_handle_at", "reboot", "swapon", "swapoff", "acct"
] as const

/** Refused for some arguments only (see `program`). */
type Checked = "clone" | "unshare" | "clone3" | "personality" | "socket" | "socketpair"

type Syscall = (typeof denied)[number] | Checked

/** From /usr/include/x86_64-linux-gnu/asm/unistd_64.h (linux-libc-dev 6.1). */
const x86_64: Readonly<Record<Syscall, number>> = {
  ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, pidfd_getfd: 438, kcmp: 312,
  mount: 165, umount2: 166, pivot_root: 155, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432,
  fspick: 433, open_tree: 428, mount_setattr: 442, setns: 308,
  keyctl: 250, add_key: 248, request_key: 249,
  bpf: 321, perf_event_open: 298, userfaultfd: 323,
  kexec_load: 246, kexec_file_load: 320, init_module: 175, finit_module: 313, delete_module: 176,
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  open_by_handle_at: 304, reboot: 169, swapon: 167, swapoff: 168, acct: 163,
  clone: 56, unshare: 272, clone3: 435, personality: 135, socket: 41, socketpair: 53
}

/** From /usr/include/asm-generic/unistd.h (linux-libc-dev 6.1): the generic table aarch64 uses. */
const aarch64: Readonly<Record<Syscall, number>> = {
  ptrace: 117, process_vm_readv: 270, process_vm_writev: 271, pidfd_getfd: 438, kcmp: 272,
  mount: 40, umount2: 39, pivot_root: 41, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432,
  fspick: 433, open_tree: 428, mount_setattr: 442, setns: 268,
  keyctl: 219, add_key: 217, request_key: 218,
  bpf: 280, perf_event_open: 241, userfaultfd: 282,
  kexec_load: 104, kexec_file_load: 294, init_module: 105, finit_module: 273, delete_module: 106,
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  open_by_handle_at: 265, reboot: 142, swapon: 224, swapoff: 225, acct: 89,
  clone: 220, unshare: 97, clone3: 435, personality: 92, socket: 198, socketpair: 199
}

/** The syscall numbers the filter uses for `arch` (exported so tests can pin them against the headers). */
export const syscallNumbers = (arch: SeccompArch): Readonly<Record<Syscall, number>> =>
  arch === "x86_64" ? x86_64 : aarch64

/** The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch` (linux/audit.h). */
const auditArch: Readonly<Record<SeccompArch, number>> = { x86_64: 0xC000003E, aarch64: 0xC00000B7 }

/** Names of the syscalls the default filter refuses (for docs / doctor), per arch: today the same list on both. */
export const deniedSyscalls = (_arch: SeccompArch): ReadonlyArray<string> => denied

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS = 0x20 // BPF_LD | BPF_W | BPF_ABS
const JEQ_K = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K = 0x45 // BPF_JMP | BPF_JSET | BPF_K
const RET_K = 0x06 // BPF_RET | BPF_K
const RET_KILL_PROCESS = 0x80000000
const RET_ERRNO = 0x00050000
const RET_ALLOW = 0x7fff0000
const EPERM = 1
const ENOSYS = 38

// Offsets into `struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }`.
const OFFSET_NR = 0
const OFFSET_ARCH = 4
const OFFSET_ARG0_LOW = 16 // args[0] low word: little-endian; each check below explains why the high word is not read

const X32_SYSCALL_BIT = 0x40000000

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME (linux/sched.h). */
const NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 |
  0x00000080

/** personality(2): PER_LINUX, and the value that only reads the current persona (linux/personality.h). */
const PER_LINUX = 0
const PERSONALITY_QUERY = 0xffffffff

/** AF_VSOCK (linux/socket.h). */
const AF_VSOCK = 40

/** One instruction; `jt` / `jf` name a label to jump to (absent: fall through to the next instruction). */
interface Insn {
  readonly code: number
  readonly k: number
  readonly jt?: string
  readonly jf?: string
  readonly label?: string
}

const load = (offset: number): Insn => ({ code: LD_W_ABS, k: offset })
const ret = (k: number): Insn => ({ code: RET_K, k })
const jumpIfEqual = (k: number, jt: string): Insn => ({ code: JEQ_K, k, jt })
const jumpIfAnyBit = (k: number, jt: string): Insn => ({ code: JSET_K, k, jt })

/** The program as instructions with symbolic jumps. Returns are shared at the end, so each check is one JEQ. */
const program = (arch: SeccompArch): ReadonlyArray<Insn> => {
  const numbers = syscallNumbers(arch)
  return [
    // Fail closed on any other arch: on x86_64 this is what stops i386 (int 0x80) syscalls, whose numbers differ.
    load(OFFSET_ARCH),
    { code: JEQ_K, k: auditArch[arch], jt: "nr" },
    ret(RET_KILL_PROCESS),
    { ...load(OFFSET_NR), label: "nr" },
    // x32 syscalls share AUDIT_ARCH_X86_64 but set this bit in nr: without this check they would slip past the JEQs.
    ...(arch === "x86_64" ? [jumpIfAnyBit(X32_SYSCALL_BIT, "eperm")] : []),
    ...denied.map((name) => jumpIfEqual(numbers[name], "eperm")),
    // clone3 passes its flags behind a pointer BPF cannot read. ENOSYS (not EPERM) makes glibc >= 2.34 fall back
    // to clone, whose flags the next check sees; EPERM breaks pthread_create and posix_spawn outright (measured:
    // Python's threading fails with "can't start new thread" under glibc 2.36).
    jumpIfEqual(numbers.clone3, "enosys"),
    // clone and unshare both take the flags first on x86_64 and aarch64.
    jumpIfEqual(numbers.clone, "flags"),
    jumpIfEqual(numbers.unshare, "flags"),
    jumpIfEqual(numbers.personality, "persona"),
    jumpIfEqual(numbers.socket, "domain"),
    jumpIfEqual(numbers.socketpair, "domain"),
    ret(RET_ALLOW),
    // Only the low word: clone uses lower_32_bits(flags) and glibc may leave junk (sign extension of CLONE_IO) in
    // the high word, so refusing a nonzero high word would break real programs; unshare refuses high bits (EINVAL).
    { ...load(OFFSET_ARG0_LOW), label: "flags" },
    jumpIfAnyBit(NAMESPACE_FLAGS, "eperm"),
    ret(RET_ALLOW),
    // socket and socketpair take an int domain, so the kernel never sees the high word (Codex compares a Dword,
    // sandbox-runtime masks with 0xffffffff). VM sockets reach services on the hypervisor's host (WSL2's interop,
    // a Firecracker host's listeners), and a network namespace does not stop them (measured: Linux 6.18 guest).
    { ...load(OFFSET_ARG0_LOW), label: "domain" },
    jumpIfEqual(AF_VSOCK, "eperm"),
    ret(RET_ALLOW),
    // personality takes an unsigned int, so the kernel ignores the high word and so do we (personality(-1) is a
    // query). Any other persona is refused: ADDR_NO_RANDOMIZE turns ASLR off for what the program execs next,
    // READ_IMPLIES_EXEC makes readable mappings executable, MMAP_PAGE_ZERO (in PER_SVR4) maps page zero at exec.
    // Docker's default profile also lets PER_LINUX32 and UNAME26 through (`linux32`, `setarch`); so far unneeded.
    { ...load(OFFSET_ARG0_LOW), label: "persona" },
    jumpIfEqual(PER_LINUX, "allow"),
    jumpIfEqual(PERSONALITY_QUERY, "allow"),
    { ...ret(RET_ERRNO | EPERM), label: "eperm" },
    { ...ret(RET_ERRNO | ENOSYS), label: "enosys" },
    { ...ret(RET_ALLOW), label: "allow" }
  ]
}

/** Resolves labels to relative jumps and encodes each `sock_filter` as 8 little-endian bytes. */
const assemble = (insns: ReadonlyArray<Insn>): Uint8Array => {
  const labels = new Map<string, number>()
  insns.forEach((insn, i) => {
    if (insn.label !== undefined) labels.set(insn.label, i)
  })
  const offset = (from: number, label: string | undefined): number => {
    if (label === undefined) return 0
    const target = labels.get(label)
    const distance = target === undefined ? -1 : target - from - 1
    // Classic BPF only jumps forward, by at most 255 instructions: a longer program needs chained jumps.
    if (distance < 0 || distance > 255) throw new Error(`seccomp: jump to "${label}" from ${from} is out of range`)
    return distance
  }
  const bytes = new Uint8Array(insns.length * 8)
  const view = new DataView(bytes.buffer)
  insns.forEach((insn, i) => {
    view.setUint16(i * 8, insn.code, true)
    view.setUint8(i * 8 + 2, offset(i, insn.jt))
    view.setUint8(i * 8 + 3, offset(i, insn.jf))
    view.setUint32(i * 8 + 4, insn.k >>> 0, true)
  })
  return bytes
}

/**
 * The default deny filter for `arch`, as the bytes bwrap's --seccomp FD expects.
 *
 * @example
 * const arch = hostSeccompArch()
 * // spawn("bwrap", [..., "--seccomp", "3", "--", ...], { stdio: [..., "pipe"] }).stdio[3].end(defaultFilter(arch))
 */
export const defaultFilter = (arch: SeccompArch): Uint8Array => assemble(program(arch))
