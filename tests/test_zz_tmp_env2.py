import os
from test_zz_tmp_env import BEFORE
def test_env():
    changed = {k: v for k, v in os.environ.items() if BEFORE.get(k) != v}
    print("\nENV changed:", changed, "removed:", set(BEFORE) - set(os.environ))
