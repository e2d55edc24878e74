import json

print(json.load(open("params.json")))
