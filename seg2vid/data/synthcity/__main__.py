"""``python -m seg2vid.data.synthcity --out DIR --seeds 0:1000 --size 128x256 [--workers N]``"""

from .writer import main

raise SystemExit(main())
