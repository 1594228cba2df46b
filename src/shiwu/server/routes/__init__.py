"""The HTTP routes of `shiwu serve`, one module per resource, each an ``APIRouter``."""
