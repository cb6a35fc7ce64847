# sbx code interpreter: IPython start-up code, run in every Python kernel
# the code interpreter starts (IPKernelApp.exec_files). It adds the rich
# results E2B's SDKs read:
#
#   e2b/chart  matplotlib figures as data (Result.chart), next to their PNG
#   e2b/data   pandas DataFrames as {column: [values]} (Result.data)
#   PIL        Image.save(path) and Image.show() display the image
#
# Nothing here imports matplotlib, pandas or PIL: formatters are registered
# by type name and patches are applied when the user's code first imports
# those modules, so a kernel starts as fast as without this file. Every
# name it defines is removed again, leaving the user's namespace empty.
#
# Chart JSON follows @e2b/code-interpreter's ChartTypes (type, title,
# elements; axis charts add x_label/y_label/x_unit/y_unit, point charts add
# ticks, tick labels and scales). Extraction never raises: a figure it
# cannot read gets no e2b/chart, only its image.


def _sbx_setup():
    import datetime
    import functools
    import importlib.abc
    import inspect
    import math
    import re
    import sys

    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    ip = get_ipython()  # noqa: F821 (IPython's start-up namespace has it)

    # ------------------------------------------------------------------
    # JSON-safe scalars

    def number(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    def rounded(v, digits=12):
        # Tick positions and geometry carry float noise (2.8000000000000003;
        # a pie wedge's angles are float32, 323.999991417 for 324): keep
        # the digits that are real and drop the noise.
        f = number(v)
        return None if f is None else float(f"{f:.{digits}g}")

    def scalar(v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        pd = sys.modules.get("pandas")
        if pd is not None and v is pd.NaT:  # a datetime subclass
            return None
        if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
            return v.isoformat()
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(v, np.datetime64):
                if np.isnat(v):
                    return None
                return str(v.astype("datetime64[s]"))
            if isinstance(v, np.timedelta64):
                return str(v)
            if isinstance(v, np.generic):
                return scalar(v.item())
        if pd is not None:
            if isinstance(v, pd.Timedelta):
                return str(v)
            try:
                if v is pd.NA:
                    return None
            except AttributeError:
                pass
        if isinstance(v, complex):
            return str(v)
        try:
            f = float(v)  # Decimal, Fraction
        except (TypeError, ValueError):
            return str(v)
        return f if math.isfinite(f) else None

    # ------------------------------------------------------------------
    # Post-import hooks: patch a module right after it is first imported.

    hooks = {}

    class HookedLoader(importlib.abc.Loader):
        def __init__(self, loader, name):
            self._loader, self._name = loader, name

        def create_module(self, spec):
            return self._loader.create_module(spec)

        def exec_module(self, module):
            self._loader.exec_module(module)
            hook = hooks.pop(self._name, None)
            if hook is not None:
                try:
                    hook(module)
                except Exception:
                    pass

        def __getattr__(self, attr):
            return getattr(self._loader, attr)

    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in hooks:
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = HookedLoader(spec.loader, name)
                    return spec
            return None

    def after_import(name, hook):
        if name in sys.modules:
            try:
                hook(sys.modules[name])
            except Exception:
                pass
        else:
            hooks[name] = hook

    sys.meta_path.insert(0, AfterImport())

    # ------------------------------------------------------------------
    # PIL: saving or showing an image displays it (as E2B's kernels do).

    def patch_pil(module):
        Image = module.Image
        original_save = Image.save

        @functools.wraps(original_save)
        def save(self, fp, format=None, **params):
            import os

            if isinstance(fp, (str, os.PathLike)):
                try:
                    from IPython.display import display

                    display(self)
                except Exception:
                    pass
            return original_save(self, fp, format, **params)

        Image.save = save

        def show(self, title=None):
            # No display server in a sandbox: the result is the viewer.
            from IPython.display import display

            display(self)

        Image.show = show

    after_import("PIL.Image", patch_pil)

    # ------------------------------------------------------------------
    # matplotlib: remember box plots' statistics. A box plot's artists are
    # plain lines and patches; Axes.bxp (which boxplot, pandas and seaborn
    # call) knows which numbers they stand for.

    def patch_bxp(module):
        Axes = module.Axes
        original = Axes.bxp
        signature = inspect.signature(original)

        @functools.wraps(original)
        def bxp(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            try:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                a = bound.arguments
                horizontal = a.get("vert") is False or a.get("orientation") == "horizontal"
                stats = [dict(s) for s in a["bxpstats"]]
                positions = a.get("positions")
                if positions is None:
                    positions = range(1, len(stats) + 1)
                record = (stats, list(positions), horizontal, bool(a.get("showfliers", True)))
                self.__dict__.setdefault("_sbx_boxplots", []).append(record)
            except Exception:
                pass
            return result

        Axes.bxp = bxp

    after_import("matplotlib.axes._axes", patch_bxp)

    # ------------------------------------------------------------------
    # matplotlib figures as chart data

    unit_re = re.compile(r"\s\((.*?)\)|\[(.*?)\]")
    child_re = re.compile(r"_child(\d+)")
    container_re = re.compile(r"_container(\d+)")

    def children(ax):
        kids = getattr(ax, "_children", None)
        if kids is None:  # matplotlib < 3.5
            kids = [*ax.lines, *ax.collections, *ax.patches, *ax.images, *ax.texts]
        return list(kids)

    def is_grid_line(line):
        # axhline/axvline: two points on a horizontal or vertical line.
        x, y = line.get_xdata(), line.get_ydata()
        try:
            return len(x) == 2 and len(y) == 2 and (x[0] == x[1] or y[0] == y[1])
        except Exception:
            return False

    def is_date_axis(axis):
        import matplotlib.dates as mdates

        conv = getattr(axis, "converter", None)
        kinds = tuple(
            k
            for k in (
                getattr(mdates, "DateConverter", None),
                getattr(mdates, "ConciseDateConverter", None),
                getattr(mdates, "_SwitchableDateConverter", None),
            )
            if k is not None
        )
        return conv is not None and isinstance(conv, kinds)

    def category_names(axis):
        # {position: name} of a categorical axis (string data), else None.
        import matplotlib.category as mcat

        if not isinstance(getattr(axis, "converter", None), mcat.StrCategoryConverter):
            return None
        units = getattr(axis, "units", None)
        mapping = getattr(units, "_mapping", None)
        if mapping is None:
            return None
        return {int(pos): str(name) for name, pos in mapping.items()}

    def tick_text(axis):
        return [t.get_text() for t in axis.get_majorticklabels()]

    def ticks(axis):
        locs = axis.get_majorticklocs()
        if is_date_axis(axis):
            import matplotlib.dates as mdates

            return [mdates.num2date(t).isoformat() for t in locs]
        return [rounded(t) for t in locs]

    def scale(axis, locs, labels):
        if is_date_axis(axis):
            return "datetime"
        s = axis.get_scale()
        if s != "linear":
            return s
        if category_names(axis) is not None:
            return "categorical"

        # Ticks at 0..n-1 labelled with words (set_xticks(range(n), names)).
        def numeric(text):
            try:
                float(text.replace("\u2212", "-"))
                return True
            except ValueError:
                return False

        if locs and len(locs) == len(labels) and all(
            t == i for i, t in enumerate(locs)
        ) and not any(numeric(l) or l == "" for l in labels):
            return "categorical"
        return "linear"

    def label_at(axis, pos):
        # The name shown at a position of an axis: its category, the label
        # the code set for a tick there, else the position itself.
        from matplotlib import ticker

        names = category_names(axis)
        p = number(pos)
        if p is None:
            return ""
        if names is not None:
            i = round(p)
            if abs(p - i) < 1e-6 and i in names:
                return names[i]
        # Labels the code chose (set_xticks(pos, names), a format function),
        # not the default numeric ones ("1.50" next to "1.3").
        chosen = (ticker.FixedFormatter, ticker.FuncFormatter, ticker.FormatStrFormatter, ticker.StrMethodFormatter)
        if isinstance(axis.get_major_formatter(), chosen):
            tol = 1e-9 * max(1.0, abs(p))
            for loc, text in zip(axis.get_majorticklocs(), tick_text(axis)):
                if abs(loc - p) <= tol and text:
                    return text
        if is_date_axis(axis):
            import matplotlib.dates as mdates

            return mdates.num2date(p).isoformat()
        return f"{p:g}"

    def title_of(ax):
        for loc in ("center", "left", "right"):
            t = ax.get_title(loc)
            if t:
                return t
        return None

    def axis_labels(ax, swap):
        out = {}
        for key, text in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            out[key + "_label"] = text or None
            unit = None
            if text:
                m = unit_re.search(text)
                if m:
                    unit = m.group(1) or m.group(2)
            out[key + "_unit"] = unit
        if swap:
            # x_label names the categories, y_label the values, whichever
            # way the bars or boxes lie.
            out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
            out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
        return out

    def point_axes(ax):
        out = axis_labels(ax, False)
        for key, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            locs = ticks(axis)
            labels = tick_text(axis)
            out[key + "_ticks"] = locs
            out[key + "_tick_labels"] = labels
            out[key + "_scale"] = scale(axis, list(axis.get_majorticklocs()), labels)
        return out

    def line_chart(ax):
        elements = []
        for line in ax.get_lines():
            if is_grid_line(line):
                continue
            label = str(line.get_label())
            m = child_re.fullmatch(label)
            if m:
                label = f"Line {int(m.group(1))}"
            xs, ys = line.get_xdata(), line.get_ydata()
            points = [[scalar(x), scalar(y)] for x, y in zip(xs, ys)]
            elements.append({"label": label, "points": points})
        return {**point_axes(ax), "elements": elements}

    def scatter_chart(ax):
        import matplotlib.dates as mdates

        xdate, ydate = is_date_axis(ax.xaxis), is_date_axis(ax.yaxis)

        def coord(v, date):
            f = number(v)
            if date and f is not None:
                return mdates.num2date(f).isoformat()
            return f

        elements = []
        for coll in ax.collections:
            points = [[coord(x, xdate), coord(y, ydate)] for x, y in coll.get_offsets()]
            elements.append({"label": str(coll.get_label()), "points": points})
        return {**point_axes(ax), "elements": elements}

    def bar_chart(ax):
        from matplotlib.container import BarContainer

        elements, horizontal = [], False
        for c in ax.containers:
            if not isinstance(c, BarContainer):
                continue
            group = str(c.get_label())
            m = container_re.fullmatch(group)
            if m:
                group = f"Group {int(m.group(1))}"
            orientation = getattr(c, "orientation", None)
            rects = list(c.patches)
            if orientation is None:
                heights = [r.get_height() for r in rects]
                orientation = "horizontal" if len(set(heights)) == 1 and len(rects) > 1 else "vertical"
            horizontal = horizontal or orientation == "horizontal"
            values = getattr(c, "datavalues", None)
            if values is None or len(values) != len(rects):
                values = [r.get_width() if orientation == "horizontal" else r.get_height() for r in rects]
            for r, v in zip(rects, values):
                if orientation == "horizontal":
                    label = label_at(ax.yaxis, r.get_y() + r.get_height() / 2)
                else:
                    label = label_at(ax.xaxis, r.get_x() + r.get_width() / 2)
                elements.append({"label": label, "group": group, "value": number(v)})
        return {**axis_labels(ax, horizontal), "elements": elements}

    def pie_chart(ax):
        from matplotlib.patches import Wedge

        elements = []
        for w in ax.patches:
            if isinstance(w, Wedge):
                elements.append(
                    {
                        "label": str(w.get_label()),
                        "angle": rounded(abs(w.theta2 - w.theta1), 7),
                        "radius": rounded(w.r),
                    }
                )
        return {"elements": elements}

    def box_chart(ax):
        elements, horizontal = [], False
        for stats, positions, horiz, showfliers in ax.__dict__.get("_sbx_boxplots", []):
            horizontal = horizontal or horiz
            axis = ax.yaxis if horiz else ax.xaxis
            for i, s in enumerate(stats):
                label = s.get("label")
                if label is None:
                    label = label_at(axis, positions[i]) if i < len(positions) else str(i + 1)
                fliers = s.get("fliers", []) if showfliers else []
                elements.append(
                    {
                        "label": str(label),
                        "min": number(s.get("whislo")),
                        "first_quartile": number(s.get("q1")),
                        "median": number(s.get("med")),
                        "third_quartile": number(s.get("q3")),
                        "max": number(s.get("whishi")),
                        "outliers": [number(f) for f in fliers],
                    }
                )
        return {**axis_labels(ax, horizontal), "elements": elements}

    def kind(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.lines import Line2D
        from matplotlib.patches import PathPatch, Rectangle, Shadow, Wedge
        from matplotlib.text import Text

        objs = [o for o in children(ax) if not isinstance(o, Text)]
        if not objs:
            return "unknown"
        if ax.__dict__.get("_sbx_boxplots") and all(isinstance(o, (Line2D, PathPatch)) for o in objs):
            return "box_and_whisker"
        if all(isinstance(o, Line2D) for o in objs):
            return "line"
        objs = [o for o in objs if not (isinstance(o, Line2D) and is_grid_line(o))]
        if objs and all(isinstance(o, PathCollection) for o in objs):
            return "scatter"
        if objs and all(isinstance(o, (Wedge, Shadow)) for o in objs) and any(isinstance(o, Wedge) for o in objs):
            return "pie"
        if objs and all(isinstance(o, Rectangle) for o in objs) and ax.containers:
            return "bar"
        return "unknown"

    extractors = {
        "line": line_chart,
        "scatter": scatter_chart,
        "bar": bar_chart,
        "pie": pie_chart,
        "box_and_whisker": box_chart,
    }

    def axes_chart(ax):
        k = kind(ax)
        chart = {"type": k, "title": title_of(ax)}
        extract = extractors.get(k)
        chart.update(extract(ax) if extract else {"elements": []})
        return chart

    def figure_chart(fig):
        axes = fig.get_axes()
        if not axes or not any(ax.has_data() for ax in axes):
            return None
        if len(axes) == 1:
            return axes_chart(axes[0])
        sup = getattr(fig, "_suptitle", None)
        title = sup.get_text() if sup is not None else None
        return {"type": "superchart", "title": title or None, "elements": [axes_chart(ax) for ax in axes]}

    def chart_or_none(fig):
        try:
            return figure_chart(fig)
        except Exception:
            return None

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            # Not a registered printer: enabling matplotlib's inline backend
            # (select_figure_formats) removes Figure from every formatter.
            figure = sys.modules.get("matplotlib.figure")
            if figure is not None and isinstance(obj, figure.Figure):
                return chart_or_none(obj)
            return super().__call__(obj)

        # Numbers are no figures: ipython_fast.py may skip this formatter
        # for them.
        __call__._sbx_none_for_numbers = True

    # ------------------------------------------------------------------
    # pandas DataFrames as data

    # Beyond this many cells a DataFrame's data is left out (its text and
    # HTML stay): the whole frame would travel in every result.
    max_cells = 1_000_000

    def frame_data(df):
        try:
            if df.size > max_cells:
                return None
            return {str(col): [scalar(v) for v in df.iloc[:, i].tolist()] for i, col in enumerate(df.columns)}
        except Exception:
            return None

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    display = ip.display_formatter
    display.formatters["e2b/chart"] = ChartFormatter(parent=display)
    data = DataFormatter(parent=display)
    data.for_type_by_name("pandas.core.frame", "DataFrame", frame_data)
    display.formatters["e2b/data"] = data


_sbx_setup()
del _sbx_setup
