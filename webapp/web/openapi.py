"""The OpenAPI 3 document of Winnow's JSON endpoints: the public API, the admin JSON lists and
the registry that serving nodes read.

Served at /api/openapi.json. tests/test_openapi.py runs schemathesis against it, so a response
that drifts from what is written here fails the suite.
"""
from webapp.model.recipe import ARCHS

ADMIN = [{"session": []}]
NODE = [{"nodeToken": []}]


def _error(description):
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name, schema, description):
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "items per page")
OFFSET = _query("offset", {"type": "integer", "minimum": 0}, "items to skip")
VERSION = _query("version", {"type": "string"}, "a registered model version (default: active)")
THRESHOLD = _query("threshold", {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                  "maximum": 1},
                   "similarity at least: the share of the 64 bits of two images' perceptual "
                   "hashes that agree (default 0.875); for versions scored before hashes, the "
                   "cosine of the embeddings (default 0.95)")
VERSION_PATH = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
ADMIN_ERRORS = {"400": _error("a parameter is not valid"), "401": _error("not logged in"),
                "404": _error("no such model version"),
                "409": _error("the model has not scored the images yet: rescore first")}


def _clean_list(summary, params, item):
    return {"get": {"summary": summary, "security": ADMIN, "parameters": [*params, LIMIT, OFFSET,
                                                                          VERSION],
                    "responses": {"200": _json(_ref(item)), **ADMIN_ERRORS}}}


SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "RegistryActive": {
        "type": "object", "required": ["version", "bundle_sha256", "reason"],
        "properties": {"version": {"type": "string", "nullable": True},
                       "bundle_sha256": {"type": "string", "nullable": True},
                       "reason": {"type": "string", "nullable": True}}},
    "ModelSource": {
        "type": "object", "description": "a serving node's model source",
        "required": ["location", "state", "active", "checked_s_ago", "last_error"],
        "properties": {"location": {"type": "string"},
                       "state": {"type": "string",
                                 "enum": ["unknown", "ok", "unreachable", "refused"]},
                       "active": {"type": "string", "nullable": True},
                       "checked_s_ago": {"type": "number", "nullable": True},
                       "last_error": {"type": "string", "nullable": True}}},
    "Classification": {
        "type": "object", "required": ["predictions", "model"],
        "properties": {
            "predictions": {"type": "array", "description": "[label, probability], most likely "
                            "first", "items": {"type": "array", "minItems": 2, "maxItems": 2}},
            "model": {"type": "string", "description": "the model version that answered"}}},
    "Item": {
        "type": "object",
        "required": ["image_id", "name", "label", "split", "predicted", "confidence", "loss"],
        "properties": {
            "image_id": {"type": "integer"}, "name": {"type": "string"},
            "label": {"type": "string"}, "split": {"type": "string", "enum": ["train", "valid"]},
            "predicted": {"type": "string"}, "confidence": {"type": "number"},
            "loss": {"type": "number", "nullable": True},
            "score": {"type": "number", "nullable": True}}},
    "LossList": {"type": "object", "required": ["version", "total", "items", "ranked_by"],
                 "properties": {"version": {"type": "string"}, "total": {"type": "integer"},
                                "ranked_by": {"type": "string"},
                                "items": {"type": "array", "items": _ref("Item")}}},
    "PairList": {"type": "object", "required": ["version", "total", "items", "ranked_by"],
                 "properties": {
                     "version": {"type": "string"}, "total": {"type": "integer"},
                     "threshold": {"type": "number"}, "ranked_by": {"type": "string"},
                     "items": {"type": "array", "items": {
                         "type": "object",
                         "required": ["first", "second", "similarity", "straddles_split",
                                      "labels_differ"],
                         "properties": {"first": _ref("Item"), "second": _ref("Item"),
                                        "similarity": {"type": "number"},
                                        "straddles_split": {"type": "boolean"},
                                        "labels_differ": {"type": "boolean"}}}}}},
    "IssueList": {"type": "object", "required": ["version", "total", "items", "ranked_by"],
                  "properties": {
                      "version": {"type": "string"}, "total": {"type": "integer"},
                      "ranked_by": {"type": "string", "description": "the score, and which "
                                    "sources of out-of-sample probabilities judged the images"},
                      "sources": {"type": "array", "items": {
                          "type": "object", "required": ["source", "images"],
                          "properties": {"source": {"type": "string"},
                                         "images": {"type": "integer"}}}},
                      "items": {"type": "array", "items": {"allOf": [_ref("Item"), {
                          "type": "object",
                          "required": ["suggested", "suggested_probability", "quality",
                                       "flagged"],
                          "properties": {"suggested": {"type": "string"},
                                         "suggested_probability": {"type": "number"},
                                         "quality": {"type": "number"},
                                         "flagged": {"type": "boolean"}}}]}}}},
    "OutlierList": {"type": "object", "required": ["version", "total", "items", "ranked_by"],
                    "properties": {
                        "version": {"type": "string"}, "total": {"type": "integer"},
                        "ranked_by": {"type": "string"},
                        "items": {"type": "array", "items": {"allOf": [_ref("Item"), {
                            "type": "object", "required": ["score"],
                            "properties": {"score": {"type": "number"}}}]}}}},
    "Map": {"type": "object",
            "required": ["version", "method", "total", "unplaced", "marks", "points"],
            "properties": {
                "version": {"type": "string"},
                "method": {"type": "string", "description": "how the 2D projection was made"},
                "total": {"type": "integer", "description": "images on the map"},
                "unplaced": {"type": "integer", "description": "labeled images not on the "
                             "map (added since scoring): rescore to place them"},
                "marks": {"type": "object", "description": "what each mark means",
                          "additionalProperties": {"type": "string"}},
                "points": {
                    "type": "object", "description": "columns: row i of every list is one image",
                    "required": ["image_id", "name", "label", "split", "x", "y", "label_issue",
                                 "outlier", "duplicate"],
                    "properties": {
                        "image_id": {"type": "array", "items": {"type": "integer"}},
                        "name": {"type": "array", "items": {"type": "string"},
                                 "description": "exactly as in cleaned.csv"},
                        "label": {"type": "array", "items": {"type": "string"}},
                        "split": {"type": "array",
                                  "items": {"type": "string", "enum": ["train", "valid"]}},
                        "x": {"type": "array", "items": {"type": "number"}},
                        "y": {"type": "array", "items": {"type": "number"}},
                        "label_issue": {"type": "array", "items": {"type": "boolean"}},
                        "outlier": {"type": "array", "items": {"type": "boolean"}},
                        "duplicate": {"type": "array", "items": {"type": "boolean"}}}}}},
    "Job": {"type": "object",
            "required": ["id", "kind", "status", "percent", "message", "items", "counts"],
            "properties": {
                "id": {"type": "integer"}, "kind": {"type": "string"},
                "status": {"type": "string",
                           "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                "phase": {"type": "string", "nullable": True},
                "percent": {"type": "number", "nullable": True},
                "eta_seconds": {"type": "number", "nullable": True},
                "message": {"type": "string", "nullable": True},
                "items": {"type": "array", "items": {"type": "object"}},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "Estimate": {
        "type": "object",
        "required": ["from_scratch", "weights", "phases", "total_seconds", "total", "basis"],
        "properties": {
            "from_scratch": {"type": "boolean",
                             "description": "the run will start from random weights"},
            "weights": {"type": "object", "required": ["note", "warning"],
                        "description": "what the retrain form says about ImageNet weights",
                        "properties": {"note": {"type": "string"},
                                       "warning": {"type": "boolean"}}},
            "phases": {"type": "array", "items": {
                "type": "object", "required": ["name", "seconds", "time", "detail"],
                "properties": {"name": {"type": "string"}, "seconds": {"type": "number"},
                               "time": {"type": "string"}, "detail": {"type": "string"}}}},
            "total_seconds": {"type": "number", "nullable": True,
                              "description": "null: no run has been timed to scale from"},
            "total": {"type": "string", "nullable": True},
            "basis": {"type": "string", "description": "the timed run it scales from, and how"}}},
    "SgdRun": {"type": "object",
               "required": ["model", "options", "points", "steps", "diverged", "summary"],
               "properties": {
                   "model": {"type": "string", "enum": ["linear", "logistic"]},
                   "options": {"type": "object"}, "points": {"type": "array"},
                   "steps": {"type": "array", "items": {
                       "type": "object", "required": ["step", "epoch", "params", "loss"],
                       "properties": {"step": {"type": "integer"}, "epoch": {"type": "integer"},
                                      "params": {"type": "array",
                                                 "items": {"type": "number"}},
                                      "loss": {"type": "number"}}}},
                   "diverged": {"type": "boolean"},
                   "summary": {"type": "string", "nullable": True}}},
}

PATHS = {
    "/api/classify": {"post": {
        "summary": "Classify one image (multipart field `file`, or the raw image as the body)",
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": _json(_ref("Classification")),
                      "400": _error("not a usable image"),
                      "413": _error("the upload is too large"),
                      "429": _error("too many requests from this client"),
                      "503": _error("no model is active yet")}}},
    "/classify-url": {"get": {
        "summary": "Fetch an image by its http(s) address and classify it (the lesson's endpoint)",
        "parameters": [{"name": "url", "in": "query", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref("Classification")),
                      "400": _error("a bad or refused address, or not a usable image"),
                      "413": _error("the image is too large"),
                      "429": _error("too many requests from this client"),
                      "502": _error("the server answered with an error"),
                      "503": _error("no model is active yet, or too many fetches at once"),
                      "504": _error("the server did not answer in time")}}},
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({
        "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}})}}},
    "/readyz": {"get": {"summary": "Readiness: a model is loaded", "responses": {
        "200": _json({"type": "object", "required": ["status", "role", "model", "runtime"],
                      "properties": {
                          "status": {"type": "string"},
                          "role": {"type": "string", "enum": ["admin", "node"]},
                          "model": {"type": "string"},
                          "runtime": {"type": "string", "enum": ["onnx", "fastai"]},
                          "precision": {"type": "string"}, "note": {"type": "string"},
                          "source": _ref("ModelSource")}}),
        "503": _error("no model is loaded")}}},
    "/registry/active": {"get": {
        "summary": "For serving nodes: the active version and its bundle.json's sha256",
        "security": NODE,
        "responses": {"200": _json(_ref("RegistryActive")),
                      "401": _error("no live node token")}}},
    "/registry/{version}/bundle": {"get": {
        "summary": "For serving nodes: a servable version's bundle.json, as recorded",
        "security": NODE, "parameters": [VERSION_PATH],
        "responses": {"200": _json({"type": "object"}), "401": _error("no live node token"),
                      "404": _error("no such servable version"),
                      "409": _error("the bundle on disk is not the one recorded")}}},
    "/registry/{version}/bundle/{name}": {"get": {
        "summary": "For serving nodes: one file that the version's bundle.json lists",
        "security": NODE,
        "parameters": [VERSION_PATH, {"name": "name", "in": "path", "required": True,
                                      "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the file's bytes", "content": {
                          "application/octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}}},
                      "401": _error("no live node token"),
                      "404": _error("no such file in a servable version's bundle"),
                      "409": _error("the bundle on disk is not the one recorded")}}},
    "/learn/sgd.json": {"get": {
        "summary": "SGD from scratch: a linear or logistic regression's trajectory",
        "parameters": [
            _query("model", {"type": "string", "enum": ["linear", "logistic"]}, "the model"),
            _query("lr", {"type": "number"}, "learning rate"),
            _query("bs", {"type": "integer"}, "batch size"),
            _query("epochs", {"type": "integer"}, "epochs"),
            _query("seed", {"type": "integer"}, "random seed")],
        "responses": {"200": _json(_ref("SgdRun")), "400": _error("an option cannot run"),
                      "429": _error("too many requests from this client")}}},
    "/clean/top-losses.json": _clean_list(
        "The cleaner's images by loss, highest first",
        [_query("label", {"type": "string"}, "only this class"),
         _query("split", {"type": "string", "enum": ["both", "train", "valid"]}, "split"),
         _query("actual", {"type": "string"}, "a confusion cell's actual class"),
         _query("predicted", {"type": "string"}, "a confusion cell's predicted class")],
        "LossList"),
    "/clean/duplicates.json": _clean_list(
        "Near-duplicate pairs, most similar first", [THRESHOLD], "PairList"),
    "/clean/label-issues.json": _clean_list(
        "Suspected label errors, lowest label quality first", [], "IssueList"),
    "/clean/outliers.json": _clean_list(
        "Images by outlier score (unlike any other in the embedding), most unusual first", [],
        "OutlierList"),
    "/clean/map.json": {"get": {
        "summary": "Every scored image's place on the 2D map of the embeddings (x, y in [0, 1]), "
                   "with its label, split and marks, as columns",
        "security": ADMIN,
        "parameters": [THRESHOLD, VERSION],
        "responses": {"200": _json(_ref("Map")),
                      **ADMIN_ERRORS,
                      "409": _error("the model has not scored the images yet, or scored them "
                                    "before maps were drawn: rescore first")}}},
    "/admin/estimate.json": {"get": {
        "summary": "What a retrain with these settings would cost on this machine, per phase, "
                   "scaled from a run it timed; and whether it has ImageNet weights",
        "security": ADMIN,
        "parameters": [
            _query("arch", {"type": "string", "enum": list(ARCHS)},
                   "architecture (default resnet34)"),
            _query("size", {"type": "integer"}, "image size in px (default 224)"),
            _query("epochs", {"type": "integer"}, "epochs with the body frozen (default 4)"),
            _query("fine_tune_epochs", {"type": "integer"}, "epochs unfrozen (default 2)"),
            _query("lr", {"type": "string"}, "learning rate, or auto (lr_find's suggestion)"),
            _query("bs", {"type": "integer"}, "batch size (default 64)"),
            _query("pretrained", {"type": "string", "enum": ["auto", "yes", "no"]},
                   "ImageNet weights: when available, yes, or no"),
            _query("lr_find_iters", {"type": "string"}, "lr_find's iterations, or auto")],
        "responses": {"200": _json(_ref("Estimate")),
                      "400": _error("a setting the recipe refuses"),
                      "401": _error("not logged in")}}},
    "/jobs/{job_id}.json": {"get": {
        "summary": "A job's status, and its item outcomes after ?after=<item id>",
        "security": ADMIN,
        "parameters": [{"name": "job_id", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                       _query("after", {"type": "integer", "minimum": 0}, "item id")],
        "responses": {"200": _json(_ref("Job")), "401": _error("not logged in"),
                      "404": _error("no such job")}}},
}


def document(server_version="1"):
    """Return the OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Winnow", "version": server_version,
                 "description": "Classify images with the active model; the cleaner's lists "
                                "for admins (log in on /login: the session cookie)."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie",
                                            "name": "session"},
                                "nodeToken": {"type": "http", "scheme": "bearer"}}},
    }
