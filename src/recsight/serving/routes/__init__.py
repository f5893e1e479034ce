"""The service's HTTP routes, one APIRouter per resource."""
