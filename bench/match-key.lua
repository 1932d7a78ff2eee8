-- wrk script: POST /api/v1/match with the seed's body and a client key (env KEY).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "")
wrk.body = '{"job_type":"inference","model":"llama3.2","requirements":{"min_gpu_memory":8192,"max_latency":5000}}'
