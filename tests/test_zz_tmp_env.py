import os
BEFORE = dict(os.environ)
