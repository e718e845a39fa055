# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""What both framework instrumentors share: settings, telemetry and patch lifecycle.

The list of frameworks lives in one place: the package's
``opentelemetry_instrumentor`` entry points (pyproject.toml), which
``opentelemetry-instrument`` loads, and which :func:`instrumentor_classes`
reads for everything else that needs every framework (the test recorder).
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Generic, TypeVar

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from otel_fileresp._patching import Patch, PatchSet
from otel_fileresp._record import watch_opens
from otel_fileresp._telemetry import Telemetry
from otel_fileresp.settings import Settings

_SETTING_KEYWORDS = (
    "capture_path",
    "phase_spans",
    "phase_metrics",
    "metrics",
    "flush_on_shutdown",
)
_logger = logging.getLogger("otel_fileresp")

# instrument() and uninstrument() of every instrumentor, one at a time: eight
# threads instrumenting at once must patch once.
_LIFECYCLE_LOCK = threading.RLock()


def instrumentor_classes() -> list[type[FileResponseInstrumentor[Any]]]:
    """Every framework's instrumentor class, from the package's entry points,
    in the order of their framework names."""
    found = [
        entry_point.load()
        for entry_point in metadata.entry_points(group="opentelemetry_instrumentor")
        if entry_point.value.startswith(f"{__package__}.")
    ]
    return sorted(found, key=lambda instrumentor: str(instrumentor.framework_name))


def _nothing() -> None:
    return None


class Hooks:
    """Holds the telemetry the wrappers use; None while uninstrumented.

    Wrappers check it first, so a wrapper that could not be removed (someone
    wrapped the same attribute after us) passes straight through.
    ``verify_patches`` is called when a response starts: it notices (and
    repairs) a layer of ours that someone else's unwrap removed.
    """

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None
        self.verify_patches: Callable[[], None] = _nothing


H = TypeVar("H", bound=Hooks)


class FileResponseInstrumentor(BaseInstrumentor, Generic[H]):  # type: ignore[misc]
    """Base of the Starlette and aiohttp instrumentors.

    ``instrument()`` accepts ``tracer_provider``, ``meter_provider``,
    ``capture_path``, ``phase_spans``, ``phase_metrics``, ``metrics`` and
    ``flush_on_shutdown`` (see :mod:`otel_fileresp.settings`).
    """

    #: The distribution the framework is installed as, its import name, the
    #: requirement it is instrumented at, the name its telemetry carries
    #: (``fileresp.framework``), and the wrappers' class.
    framework_distribution: str
    framework_module: str
    framework_requirements: Sequence[str]
    framework_name: str
    hooks_type: type[H]

    def __init__(self) -> None:
        # BaseInstrumentor is a singleton: __init__ runs at every call.
        if not hasattr(self, "_hooks"):
            self._hooks: H = self.hooks_type()
            self._patch_set: PatchSet | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.framework_requirements

    def instrument(self, **kwargs: Any) -> Any:
        """Patch the framework (once, whatever the number of threads calling)."""
        with _LIFECYCLE_LOCK:
            return super().instrument(**kwargs)

    def uninstrument(self, **kwargs: Any) -> Any:
        """Restore the framework's own code (see :class:`~otel_fileresp._patching.PatchSet`)."""
        with _LIFECYCLE_LOCK:
            return super().uninstrument(**kwargs)

    @abstractmethod
    def _patches(self, hooks: H) -> Sequence[Patch]:
        """The patch points for the installed framework release."""

    def _telemetry(self, **kwargs: Any) -> Telemetry:
        settings = Settings.resolve(**{key: kwargs.get(key) for key in _SETTING_KEYWORDS})
        return Telemetry(
            settings,
            self.framework_name,
            kwargs.get("tracer_provider"),
            kwargs.get("meter_provider"),
        )

    def _instrument(self, **kwargs: Any) -> None:
        try:
            __import__(self.framework_module)
        except ImportError:
            # Loaded by opentelemetry-instrument because the other framework
            # is installed: nothing to do for this one.
            return
        # Some contrib releases (0.51b0-0.52b1) load instrumentors without
        # checking their dependencies: check the framework's release here too.
        conflict = get_dependency_conflicts(list(self.framework_requirements))
        if conflict is not None:
            _logger.error(
                "otel_fileresp: %s is not instrumented: %s",
                self.framework_distribution,
                conflict,
            )
            return
        self._hooks.telemetry = self._telemetry(**kwargs)
        version = metadata.version(self.framework_distribution)
        patch_set = PatchSet(f"{self.framework_distribution} {version}")
        patch_set.apply(self._patches(self._hooks))
        self._patch_set = patch_set
        watch_opens()
        self._hooks.verify_patches = patch_set.verify

    def _uninstrument(self, **kwargs: Any) -> None:
        self._hooks.telemetry = None
        self._hooks.verify_patches = _nothing
        if self._patch_set is not None:
            self._patch_set.remove()
            self._patch_set = None

    @contextmanager
    def telemetry_sent_to(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        **settings: Any,
    ) -> Iterator[None]:
        """Send this instrumentor's telemetry to other providers inside the block.

        For tests (the pytest plugin uses it): an app instrumented already
        stays patched, and its telemetry goes back where it went afterwards.
        Needs the instrumentor to be instrumented.
        """
        if not self.is_instrumented_by_opentelemetry:
            raise RuntimeError("instrument() first")
        previous = self._hooks.telemetry
        telemetry = self._telemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **settings
        )
        # The block serves in this process (a test): its zero series are
        # reported from the start, as in a server from its app's startup.
        telemetry.serving()
        self._hooks.telemetry = telemetry
        try:
            yield
        finally:
            self._hooks.telemetry = previous
