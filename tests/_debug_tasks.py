import asyncio, threading, sys, traceback
import pytest

@pytest.fixture(autouse=True)
def _dump_tasks_on_hang():
    loop_holder = {}
    done = threading.Event()
    def watchdog():
        if done.wait(25):
            return
        loop = loop_holder.get("loop")
        for t in asyncio.all_tasks(loop) if loop else []:
            print("TASK", t, file=sys.stderr)
            t.print_stack(file=sys.stderr)
    orig = asyncio.BaseEventLoop.run_forever
    def run_forever(self):
        loop_holder["loop"] = self
        return orig(self)
    asyncio.BaseEventLoop.run_forever = run_forever
    th = threading.Thread(target=watchdog, daemon=True); th.start()
    yield
    done.set()
    asyncio.BaseEventLoop.run_forever = orig
