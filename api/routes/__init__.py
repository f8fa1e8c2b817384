"""REST resources; each module exposes ROUTES, a list of `api.routing.ApiRoute`."""
