# sbx code interpreter: the lean Python runner. One process per Python
# context runs IPython's InteractiveShell, as ipykernel does, but talks to
# the code interpreter server (internal/codeinterp/python.go) over pipes
# instead of ZMQ: no message signing, no event loop, no IOPub thread, so a
# trivial run costs a fraction of a kernel's CPU.
#
#   python3 py_runner.py [startup.py]
#
# Requests arrive on stdin, one JSON object a line; the runner moves them
# to a private descriptor and puts /dev/null on fd 0, as a kernel has it.
# Private descriptors (requests, frames, end markers) sit at high numbers,
# close-on-exec, and are checked before each use (see _Private).
#   {"op": "run", "id", "code", "count", "env", "marker"}   a user's cell
#   {"op": "silent", "id", "code", "marker"}                setup code
#   {"op": "env", "id", "env", "marker"}                    env vars for good
# Frames go out on fd 3 (moved to a private descriptor at once), one JSON
# object a line, in the order they were made:
#   {"t": "ready"}                                  once, after start-up
#   {"t": "stream", "name": "stdout"|"stderr", "text"}
#   {"t": "display", "data": {mime: value}}         display(), figures
#   {"t": "result", "data": {mime: value}}          the cell's value
#   {"t": "error", "ename", "evalue", "traceback": [lines]}
#   {"t": "end", "id", "ok", "ename", "evalue"}     the request is over
# Python's own sys.stdout and sys.stderr become stream frames; what
# subprocesses write to fd 1 and 2 goes to the server directly, and each
# request ends with its marker (then "0" and \x1e) on fd 1 and fd 2 (through
# copies of them, see _sbx_main), so the server knows it has read all of it.
#
# SIGINT interrupts a cell (KeyboardInterrupt, as in a kernel) and is
# ignored between cells, so a late interrupt never kills the runner.

import builtins
import getpass
import io
import json
import os
import signal
import sys
import threading


def _sbx_main():
    global _marker_fds
    cmd = _Private(0, "requests")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    wire_fd = _Private(3, "frames")
    os.close(3)  # a cell's next file may get it, harmlessly
    # The end markers go through copies of fd 1 and 2 (the same pipes, so
    # after whatever a subprocess wrote to them): a cell may point fd 1 or
    # 2 elsewhere for good (dup2 of /dev/null to silence a C library, a
    # close), and a marker written there would never reach the server,
    # which would wait for it for good.
    _marker_fds = (_Private(1, "stdout markers"), _Private(2, "stderr markers"))
    startup = sys.argv[1] if len(sys.argv) > 1 else None
    # As in a kernel: the working directory first on the path, not ours;
    # inline figures unless the user chose a backend.
    sys.path[0] = ""
    sys.argv = [""]
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    def ignore(signum, frame):
        pass

    signal.signal(signal.SIGINT, ignore)

    wire = _Wire(wire_fd)
    shell = _make_shell(wire)
    if startup:
        try:
            shell.safe_execfile(startup, shell.user_ns, raise_exceptions=False)
        except Exception:
            pass
    wire.send({"t": "ready"})

    requests = io.open(cmd.fd, "rb", buffering=1 << 16, closefd=False)
    while True:
        cmd.check()
        line = requests.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            continue
        status = {"t": "end", "id": req.get("id"), "ok": True}
        try:
            op = req.get("op")
            if op == "run":
                _run(shell, req, status)
            elif op == "silent":
                _silent(shell, req, status)
            elif op == "env":
                os.environ.update(req.get("env") or {})
        except KeyboardInterrupt:
            pass  # a late interrupt, after the cell's own handling
        except BaseException as e:  # never lose the end frame
            status.update(ok=False, ename=type(e).__name__, evalue=str(e))
        _finish(wire, req.get("marker"), status)


def _finish(wire, marker, status):
    signal.signal(signal.SIGINT, _ignore_sigint)
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    for f in (sys.__stdout__, sys.__stderr__):
        try:
            f.flush()
        except Exception:
            pass
    if marker:
        end = (marker + "0\x1e").encode()
        for fd in _marker_fds:
            fd.check()
            try:
                _write_all(fd.fd, end)
            except OSError:
                pass
    wire.send(status, fresh_line=True)


_marker_fds = ()


class _Private:
    """One of the runner's own descriptors, a copy of fd at a high number,
    close-on-exec so no subprocess holds it. A cell may still close it
    (daemon code closes every descriptor above 2) and open a file that gets
    its number: the runner's protocol written there would never reach the
    server, which would wait for it for good. check() sees that (the
    number no longer names the pipe it named) and ends the runner, a death
    the server reports and restarts the context after."""

    def __init__(self, fd, what):
        import fcntl

        self.what = what
        self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _high_fd())
        self.id = _identity(self.fd)

    def ok(self):
        return _identity(self.fd) == self.id

    def check(self):
        if not self.ok():
            _lost(self)


def _identity(fd):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _high_fd():
    # High enough that a cell's files do not get there first, below the
    # descriptor limit (or the copy fails).
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft < 0:
        soft = 1024
    return max(10, min(soft, 1024) - 32)


def _lost(private):
    """Ends the runner after a cell took one of its descriptors, saying so
    on stderr when the runner's stderr is still there: the run's error
    (the process exited) then comes with its reason."""
    msg = ("\nsbx: the cell closed or replaced the code interpreter's %s descriptor (%d); "
           "the Python context ends here and restarts on the next run\n" % (private.what, private.fd)).encode()
    if len(_marker_fds) == 2:
        pipe = _marker_fds[1].id
        for fd in (_marker_fds[1].fd, 2):  # the copy, or fd 2 if still the same pipe
            if _identity(fd) == pipe:
                try:
                    _write_all(fd, msg)
                    break
                except OSError:
                    pass
    os._exit(70)


def _ignore_sigint(signum, frame):
    pass


def _run(shell, req, status):
    env = req.get("env") or {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        shell.execution_count = int(req.get("count") or shell.execution_count)
        shell.errors_shown = 0
        shell._last_traceback = None
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            res = shell.run_cell(req.get("code", ""), store_history=True)
        finally:
            signal.signal(signal.SIGINT, _ignore_sigint)
        # A failure with no traceback shown (a UsageError, printed on
        # stderr) is still reported as an error, as a kernel's
        # execute_reply does.
        err = res.error_before_exec or res.error_in_exec
        if not res.success and err is not None and not shell.errors_shown:
            shell.wire.send({"t": "error", "ename": type(err).__name__, "evalue": str(err), "traceback": shell._last_traceback or []})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _silent(shell, req, status):
    shell.quiet = True
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = shell.run_cell(req.get("code", ""), store_history=False, silent=True)
    finally:
        signal.signal(signal.SIGINT, _ignore_sigint)
        shell.quiet = False
    err = res.error_before_exec or res.error_in_exec
    if err is not None:
        status.update(ok=False, ename=type(err).__name__, evalue=str(err))


def _write_all(fd, b):
    view = memoryview(b)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _clean(obj):
    # What json refuses (NaN, bytes, odd types) made JSON-safe, as
    # ipykernel's json_clean does.
    import base64
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return repr(obj)


class _Wire:
    """Frames to the server, one JSON line each. A cell's value is held
    back until the next frame, so a short run's value and its end leave in
    one write."""

    def __init__(self, fd):
        self.fd = fd  # a _Private
        self.lock = threading.RLock()
        self.held = b""
        self.encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
        # A process forked while another thread held the lock would
        # inherit it held, by a thread it does not have (multiprocessing
        # forks on Linux): a child gets a new lock.
        os.register_at_fork(after_in_child=self.forked)

    def forked(self):
        self.lock = threading.RLock()

    def frame(self, obj):
        try:
            s = self.encode(obj)
        except (TypeError, ValueError):
            s = self.encode(_clean(obj))
        return s.encode("utf-8", "surrogateescape") + b"\n"

    def send(self, obj, hold=False, fresh_line=False):
        b = self.frame(obj)
        with self.lock:
            if hold:
                self.held += b
                return
            if fresh_line:
                # A frame cut short by an interrupt ends here, not glued
                # to this one.
                b = b"\n" + b
            b, self.held = self.held + b, b""
            self.fd.check()
            _write_all(self.fd.fd, b)


class _Stream(io.TextIOBase):
    """sys.stdout or sys.stderr: text becomes stream frames. Whole lines
    leave at once; a partial line waits up to 50 ms for more."""

    def __init__(self, wire, name, fd, flusher):
        self.wire, self.name, self._fd, self.flusher = wire, name, fd, flusher
        self.buf = []
        self.size = 0

    encoding = "utf-8"
    errors = "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        with self.wire.lock:
            self.buf.append(s)
            self.size += len(s)
            if "\n" in s or self.size > 8192:
                self.flush()
            else:
                self.flusher.soon()
        return len(s)

    def writelines(self, lines):
        for l in lines:
            self.write(l)

    def flush(self):
        with self.wire.lock:
            if not self.buf:
                return
            text = "".join(self.buf)
            self.buf, self.size = [], 0
            self.wire.send({"t": "stream", "name": self.name, "text": text})


class _Flusher:
    """Sends partial lines after a short wait, from a thread started on
    first need."""

    def __init__(self):
        self.streams = []
        self.wake = threading.Event()
        self.thread = None
        os.register_at_fork(after_in_child=self.forked)

    def forked(self):
        # The thread did not come along: a child starts its own on need.
        # A partial line waiting in a buffer is the parent's to send.
        self.wake = threading.Event()
        self.thread = None
        for s in self.streams:
            s.buf, s.size = [], 0

    def soon(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self.loop, name="sbx-flush", daemon=True)
            self.thread.start()
        self.wake.set()

    def loop(self):
        import time

        while True:
            self.wake.wait()
            time.sleep(0.05)
            self.wake.clear()
            for s in self.streams:
                try:
                    s.flush()
                except Exception:
                    pass


def _make_shell(wire):
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.error import StdinNotImplementedError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    flusher = _Flusher()
    out = _Stream(wire, "stdout", 1, flusher)
    err = _Stream(wire, "stderr", 2, flusher)
    flusher.streams = [out, err]

    def flush_streams():
        out.flush()
        err.flush()

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            flush_streams()
            wire.send({"t": "display", "data": data})

        def clear_output(self, wait=False):
            flush_streams()

    class Hook(DisplayHook):
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            flush_streams()
            wire.send({"t": "result", "data": format_dict}, hold=True)

        def finish_displayhook(self):
            pass

        def quiet(self):
            # IPython tokenizes the whole cell to look for a closing ';':
            # a cell without any ';' is never quiet.
            try:
                cell = self.shell.history_manager.input_hist_parsed[-1]
            except IndexError:
                return False
            return ";" in cell and super().quiet()

    class Shell(InteractiveShell):
        quiet = False  # a silent request: no error frames
        errors_shown = 0  # error frames sent during this request
        _last_traceback = None

        displayhook_class = Type(Hook)
        display_pub_class = Type(Publisher)

        def _showtraceback(self, etype, evalue, stb):
            flush_streams()
            self._last_traceback = stb
            if self.quiet:
                return
            self.errors_shown += 1
            wire.send({"t": "error", "ename": str(etype.__name__), "evalue": str(evalue), "traceback": stb})

        def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
            # IPython compiles every cell once more to look for top-level
            # await; without the words "await" and "async" it has none.
            if transformed_cell is not None and "await" not in transformed_cell and "async" not in transformed_cell:
                return False
            return super().should_run_async(raw_cell, transformed_cell=transformed_cell, preprocessing_exc_tuple=preprocessing_exc_tuple)

        def enable_gui(self, gui=None):
            pass  # no GUI event loop in a sandbox; inline figures need none

    # History in memory (a cell's commit to sqlite cost ~1.7 ms and wrote
    # to the sandbox's disk); tracebacks without colours, as E2B's kernels
    # send them.
    c = Config()
    c.HistoryManager.hist_file = ":memory:"
    c.InteractiveShell.colors = "NoColor"
    shell = Shell.instance(config=c)
    shell.wire = wire
    sys.stdout, sys.stderr = out, err

    def no_input(prompt=""):
        raise StdinNotImplementedError("raw_input was called, but this frontend does not support input requests.")

    def no_getpass(prompt="Password: ", stream=None):
        raise StdinNotImplementedError("getpass was called, but this frontend does not support input requests.")

    builtins.input = no_input
    getpass.getpass = no_getpass
    return shell


if __name__ == "__main__":
    _sbx_main()
