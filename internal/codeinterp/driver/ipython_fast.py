# sbx code interpreter: the speed-ups of every IPython kernel the code
# interpreter starts. The server appends this file to ipython_startup.py
# (drivers.go), and the kernel runs both as one start-up file
# (IPKernelApp.exec_files). Every name it defines is removed again.


def _sbx_fast():
    # ipykernel's own per-run overhead is most of what a trivial run
    # ("1+1") costs. The patches below take out what our one client (the
    # code interpreter server, which reads a run's output until the idle
    # status) does not need; each checks for what it relies on and is left
    # out on an ipykernel that does not look like the one it was written
    # against (6.x, where iopub messages go through an IOPub thread).
    import functools
    import logging
    import os
    import threading

    ip = get_ipython()  # noqa: F821
    # The formatters' speed-ups serve any IPython shell, the code
    # interpreter's own Python runner (py_runner.py) included.
    _sbx_fast_formatters(ip)
    kernel = getattr(ip, "kernel", None)
    if kernel is None:
        return
    try:
        import ipykernel.iostream as iostream
        import ipykernel.ipkernel as ipkernel
        import ipykernel.kernelbase as kernelbase
    except ImportError:
        return

    # Each run sleeps 0.5 ms after its last flush ("FIXME: on rare
    # occasions, the flush doesn't seem to make it to the clients"); ours
    # waits for the idle status, which leaves after every output.
    if isinstance(getattr(kernel, "_execute_sleep", None), float):
        kernel._execute_sleep = 0.0

    # The kernel's logger is at DEBUG and its handler at WARNING, so every
    # debug call builds a record (four per run) that nothing prints.
    log = getattr(kernel, "log", None)
    if isinstance(log, logging.Logger) and log.handlers and not log.propagate:
        lowest = min(h.level for h in log.handlers)
        if lowest > log.level:
            log.setLevel(lowest)

    # do_execute's and run_cell's signatures were read with inspect on
    # every run; they never change.
    accepts = getattr(kernelbase, "_accepts_cell_id", None)
    if accepts is not None and getattr(ipkernel, "_accepts_cell_id", None) is accepts:
        kernelbase._accepts_cell_id = ipkernel._accepts_cell_id = functools.lru_cache(maxsize=32)(accepts)

    _sbx_fast_shell(ip, kernel, kernelbase)

    pub = getattr(kernel, "iopub_thread", None)
    out = getattr(iostream, "OutStream", None)
    pub_cls = getattr(iostream, "IOPubThread", None)
    if pub is None or out is None or pub_cls is None or type(pub) is not pub_cls:
        return
    if not all(hasattr(pub, a) for a in ("_events", "_really_send", "_handle_event", "_event_puller", "_is_master_process", "thread", "schedule")):
        return
    if not all(hasattr(out, a) for a in ("_flush", "flush")):
        return
    stdout = getattr(__import__("sys"), "stdout", None)
    if not isinstance(stdout, out) or not all(hasattr(stdout, a) for a in ("_buffer", "_buffer_lock", "_flush_pending", "echo", "_is_master_process")):
        return

    # iopub messages sent from the main thread (where cells run: status,
    # execute_input, results, display data) were each handed to the IOPub
    # thread, a wake-up and a fight for the GIL per message. They are now
    # sent at once when nothing is queued for that thread. One lock is
    # held by everything that sends on the socket or queues a stream's
    # text, so the order of messages stays the order they were made in: a
    # message waits behind anything already queued.
    #
    # A process forked while another thread held the lock would inherit it
    # held, by a thread it does not have (multiprocessing forks on Linux):
    # a child gets a new lock.
    class Guard:
        lock = threading.RLock()

    def new_lock():
        Guard.lock = threading.RLock()

    os.register_at_fork(after_in_child=new_lock)
    main = threading.main_thread()
    handle_event, send_multipart, stream_flush, flush = pub_cls._handle_event, pub_cls.send_multipart, out._flush, out.flush

    def locked_handle_event(self, msg):
        with Guard.lock:
            handle_event(self, msg)

    def direct_send_multipart(self, *args, **kwargs):
        if threading.current_thread() is main and self.thread.is_alive() and self._is_master_process():
            with Guard.lock:
                if not self._events:
                    self._really_send(*args, **kwargs)
                    return
        send_multipart(self, *args, **kwargs)

    def locked_stream_flush(self):
        with Guard.lock:
            stream_flush(self)

    # Every flush of stdout and stderr (six per run) waited for a round
    # trip through the IOPub thread, also with nothing to send. With
    # nothing buffered or pending it now returns at once; text written
    # from now on is flushed as before.
    def flush_if_written(self):
        if self.echo is None and not self._flush_pending and self._is_master_process():
            with self._buffer_lock:
                empty = self._buffer.tell() == 0
            if empty:
                return
        flush(self)

    pub_cls._handle_event = locked_handle_event
    pub_cls.send_multipart = direct_send_multipart
    out._flush = locked_stream_flush
    out.flush = flush_if_written
    # The event pipe's callback was bound before the patch; rebind it in
    # the IOPub thread, which owns the stream.
    pub.schedule(lambda: pub._event_puller.on_recv(pub._handle_event))


def _sbx_fast_formatters(ip):
    import functools

    # IPython wraps each formatter's __call__ with the decorator package,
    # which binds every call's arguments to the signature with inspect:
    # twelve formatters per result. Each is rewrapped to call IPython's own
    # error handler (catch_format_error's undecorated body) directly.
    try:
        import IPython.core.formatters as formatters
    except ImportError:
        formatters = None
    handler = getattr(getattr(formatters, "catch_format_error", None), "__wrapped__", None)
    if callable(handler):

        def direct(method):
            @functools.wraps(method)
            def call(self, *args, **kwargs):
                return handler(method, self, *args, **kwargs)

            return call

        for cls in vars(formatters).values():
            if isinstance(cls, type) and issubclass(cls, formatters.BaseFormatter):
                wrapped = getattr(cls.__dict__.get("__call__"), "__wrapped__", None)
                if callable(wrapped):
                    cls.__call__ = direct(wrapped)

        # A number's result went through ten MIME formatters (HTML, PNG,
        # LaTeX...) that each walked int's MRO through three printer tables
        # and looked for a _repr_*_ method, to find nothing. A builtin
        # number has no such method (its type takes no new attributes), so
        # the answer is None unless a printer was registered for it (or for
        # object), which is what is checked instead.
        base = formatters.BaseFormatter
        generic = base.__dict__.get("__call__")
        # Each number type's MRO (bool is an int), as types and as the
        # (module, name) keys of deferred printers.
        numbers = {t: (t.__mro__, [(c.__module__, c.__name__) for c in t.__mro__]) for t in (int, float, complex, bool)}
        if callable(generic) and all(hasattr(base, a) for a in ("type_printers", "singleton_printers", "deferred_printers", "enabled")):

            def call_no_printer_for_numbers(self, obj):
                mro = numbers.get(type(obj))
                if mro is not None:
                    tp, dp = self.type_printers, self.deferred_printers
                    if id(obj) not in self.singleton_printers and not any(c in tp for c in mro[0]) and not any(k in dp for k in mro[1]):
                        return None
                return generic(self, obj)

            base.__call__ = call_no_printer_for_numbers
            _sbx_fast_number_results(ip, formatters, numbers, call_no_printer_for_numbers)


def _sbx_fast_number_results(ip, formatters, numbers, generic_call):
    # A number as a cell's value still went through the whole display
    # formatter: twelve formatters called (each a traitlets-heavy call) to
    # learn that only text/plain has something to say. When every other
    # formatter is one whose answer for a builtin number is None (IPython's
    # own, or one marked _sbx_none_for_numbers, like the start-up file's
    # chart formatter) and none has a printer along the number's type's
    # MRO, only text/plain is asked. Anything else takes the full path.
    display = getattr(ip, "display_formatter", None)
    cls = type(display)
    full = getattr(cls, "format", None)
    plain_cls = getattr(formatters, "PlainTextFormatter", None)
    special = tuple(getattr(formatters, n, None) for n in ("IPythonDisplayFormatter", "MimeBundleFormatter"))
    if not callable(full) or plain_cls is None or None in special:
        return
    own_calls = {generic_call, special[0].__call__, special[1].__call__}

    def no_printer(f, obj, mro):
        return id(obj) not in f.singleton_printers and not any(c in f.type_printers for c in mro[0]) and not any(k in f.deferred_printers for k in mro[1])

    def format_number_plainly(self, obj, include=None, exclude=None):
        mro = numbers.get(type(obj))
        if mro is None or include or exclude:
            return full(self, obj, include, exclude)
        plain = None
        for f in (self.ipython_display_formatter, self.mimebundle_formatter, *self.formatters.values()):
            call = type(f).__call__
            if type(f) is plain_cls and plain is None and f.format_type == "text/plain":
                plain = f
                continue
            if not (call in own_calls or getattr(call, "_sbx_none_for_numbers", False)) or not no_printer(f, obj, mro):
                return full(self, obj, include, exclude)
        if plain is None or self.formatters.get("text/plain") is not plain:
            return full(self, obj, include, exclude)
        data = plain(obj)
        md = None
        if isinstance(data, tuple) and len(data) == 2:
            data, md = data
        return ({"text/plain": data} if data is not None else {}), ({"text/plain": md} if md is not None else {})

    cls.format = format_number_plainly


def _sbx_fast_shell(ip, kernel, kernelbase):
    # What every shell request cost besides the code it runs. Like
    # _sbx_fast's patches, each checks for the ipykernel 6 shape it was
    # written against and is left out otherwise.
    import inspect
    import threading

    import zmq
    from zmq.eventloop.zmqstream import ZMQStream

    main = threading.main_thread()
    sndmore = int(zmq.SNDMORE)

    # Before each request, dispatch_shell woke the control thread to flush
    # its queue, and that thread's answer woke the main loop again (which
    # does not even wait for it): two thread wake-ups and a fight for the
    # GIL in the middle of every run, a third of a trivial run's CPU. Our
    # server sends control messages only to shut a kernel down (interrupts
    # are signals), never in a race with a request it waits for.
    flush_control = getattr(type(kernel), "_flush_control_queue", None)
    if inspect.iscoroutinefunction(flush_control) and getattr(kernel, "control_thread", None) is not None:

        async def skip_flush_control_queue():
            return None

        kernel._flush_control_queue = skip_flush_control_queue

    # Of the five messages a run sent, two are gone. The busy status that
    # opened every request (seven frames, two JSON dates, an HMAC each) was
    # read and dropped by our server. And the execute_reply went out on
    # the shell socket, with the idle status after it on iopub, because
    # only iopub's order says a run's output is complete: the reply now
    # travels on iopub as the request's last message, in the idle status's
    # place (internal/codeinterp/jupyter's Execute takes either form).
    # Other requests' replies, and busy on the control channel, are sent
    # as before.
    publish_status = getattr(kernel, "_publish_status", None)
    session = getattr(kernel, "session", None)
    session_send = getattr(session, "send", None)
    shell_stream = getattr(kernel, "shell_stream", None)
    topic = getattr(kernel, "_topic", None)
    try:
        params = list(inspect.signature(publish_status).parameters)
        send_params = list(inspect.signature(session_send).parameters)
    except (TypeError, ValueError):
        params, send_params = [], []
    if params[:2] == ["status", "channel"] and send_params[:5] == ["stream", "msg_or_type", "content", "parent", "ident"] and shell_stream is not None and callable(topic):
        replies = []

        def send_execute_reply_last(stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, track=False, header=None, metadata=None):
            if stream is shell_stream and msg_or_type == "execute_reply" and not buffers and threading.current_thread() is main:
                msg = session.msg(msg_or_type, content=content, parent=parent, header=header, metadata=metadata)
                replies[:] = [msg]
                return msg
            return session_send(stream, msg_or_type, content, parent, ident, buffers, track, header, metadata)

        def publish_status_but_busy(status, channel, *args, **kwargs):
            if channel == "shell" and status == "busy":
                return
            if channel == "shell" and status == "idle" and replies and threading.current_thread() is main:
                session_send(kernel.iopub_socket, replies.pop(), ident=topic("execute_reply"))
                return
            publish_status(status, channel, *args, **kwargs)

        session.send = send_execute_reply_last
        kernel._publish_status = publish_status_but_busy

    # pyzmq's send_multipart checks every frame's type and ORs an IntFlag
    # per frame (slow enum arithmetic): for the kernel's own sockets, which
    # only ever send bytes from jupyter_client, frames go straight to the
    # socket. Anything else takes the original path.
    base_send = getattr(getattr(zmq, "backend", None), "Socket", None)
    base_send = getattr(base_send, "send", None)

    def plain_send_multipart(sock):
        original = sock.send_multipart

        def bytes_send_multipart(parts, flags=0, copy=True, track=False, **kwargs):
            if kwargs or track or not parts or not all(type(p) is bytes for p in parts):
                return original(parts, flags, copy=copy, track=track, **kwargs)
            flags = int(flags)
            more = flags | sndmore
            for p in parts[:-1]:
                base_send(sock, p, more, copy)
            return base_send(sock, parts[-1], flags, copy)

        return bytes_send_multipart

    # Replies were queued on the shell stream and sent by the event loop
    # only at the end of the request, after the idle status, with a poller
    # update for each. With nothing queued before it, a reply now leaves at
    # once from the loop's thread, ahead of idle (a ROUTER socket never
    # blocks a send). ipykernel registers no send callback on this stream.
    stream = getattr(kernel, "shell_stream", None)
    if type(stream) is ZMQStream and hasattr(stream, "_send_queue") and isinstance(getattr(stream, "socket", None), zmq.Socket):
        queued_send = stream.send_multipart
        sock = stream.socket
        send = plain_send_multipart(sock) if callable(base_send) else sock.send_multipart

        def direct_stream_send(msg, flags=0, copy=True, track=False, callback=None, **kwargs):
            if callback is None and not kwargs and not track and stream._send_queue.empty() and threading.current_thread() is main:
                try:
                    send(msg, flags, copy)
                except zmq.ZMQError as e:
                    kernel.log.error("shell send failed: %s", e)
                return
            queued_send(msg, flags, copy, track, callback, **kwargs)

        stream.send_multipart = direct_stream_send

    pub = getattr(getattr(kernel, "iopub_thread", None), "socket", None)
    if callable(base_send) and isinstance(pub, zmq.Socket):
        pub.send_multipart = plain_send_multipart(pub)

    # ipykernel transforms a cell (tokenizing it twice) to choose between
    # its async and sync paths, and the sync path, every plain cell's,
    # transforms the same string again. The second call now gets the first
    # one's result: a cache of one entry, for the very same string object,
    # dropped when the cell starts (pre_execute), so no later run can see it.
    transform = getattr(ip, "transform_cell", None)
    events = getattr(ip, "events", None)
    if callable(transform) and events is not None and "pre_execute" in getattr(events, "callbacks", {}):
        last = []

        def transform_cell_once(raw_cell):
            if last:
                cell, result = last.pop()
                if cell is raw_cell:
                    return result
            result = transform(raw_cell)
            last.append((raw_cell, result))
            return result

        ip.transform_cell = transform_cell_once
        events.register("pre_execute", last.clear)

    # Session.pack ran json.dumps with keyword arguments, which builds a new
    # encoder for each of a message's four parts; one encoder with the very
    # same settings now serves them all. Anything it refuses goes to the
    # original packer, which cleans the object and warns as before.
    try:
        import json

        import jupyter_client.session as jsession
    except ImportError:
        jsession = None
    session = getattr(kernel, "session", None)
    packer, default = getattr(jsession, "json_packer", None), getattr(jsession, "json_default", None)
    if session is not None and callable(default) and getattr(session, "pack", None) is packer:
        encode = json.JSONEncoder(default=default, ensure_ascii=False, allow_nan=False).encode

        def json_packer_one_encoder(obj):
            try:
                return encode(obj).encode("utf8", errors="surrogateescape")
            except (TypeError, ValueError):
                return packer(obj)

        session.pack = json_packer_one_encoder


try:
    _sbx_fast()
except Exception:
    pass
del _sbx_fast, _sbx_fast_shell, _sbx_fast_formatters, _sbx_fast_number_results
