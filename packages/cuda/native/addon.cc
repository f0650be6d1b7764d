// The Node-API side of @flashattn/cuda.
//
// A Context owns one CUDA stream and one worker thread. Every call (upload, download, free, forward,
// backward, timing) becomes a task in a FIFO queue that the worker runs in order on the stream, so
// JavaScript never blocks on the GPU and calls issued back to back keep their order (a forward that
// follows an upload sees its data). Results come back to the JavaScript thread through a
// thread-safe function that settles each task's promise. Device buffers live in a table owned by the
// worker and are named by integer ids that JavaScript takes synchronously (newId), so a whole
// host-in/host-out call can be queued at once. CUDA errors reject with {code, message}; errors that
// poison the CUDA context mark the Context lost, and later calls reject with DEVICE_LOST.
#include <napi.h>
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "attn_params.h"
#include "launch.h"

namespace {

struct Fail {
  std::string code;
  std::string message;
};

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorContextIsDestroyed:
    case cudaErrorDevicesUnavailable:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

std::string describe_cuda(cudaError_t e, const char* what) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

struct Buf {
  void* ptr = nullptr;
  size_t bytes = 0;
};

class Context;

struct Task {
  Context* ctx = nullptr;
  napi_deferred deferred = nullptr;
  std::function<void(Context&, Task&)> run;  // worker thread
  std::function<Napi::Value(Napi::Env, Task&)> result;  // JavaScript thread
  bool ok = true;
  bool always = false;  // runs even after the context was lost (free, dispose)
  Fail fail;
  std::vector<Napi::ObjectReference> keep;  // JavaScript objects the task reads or writes
  // Plain results.
  std::string kernel;
  int splits = 1;
  double scratch_bytes = 0;
  std::vector<double> times;
  double num[4] = {0, 0, 0, 0};
  std::string text;
};

// Reads descriptor fields.
double num_of(const Napi::Object& o, const char* key, double dflt = 0) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
}
uint32_t id_of(const Napi::Object& o, const char* key) { return (uint32_t)num_of(o, key, 0); }

template <typename A, typename E> std::vector<E> vec_of(const Napi::Object& o, const char* key) {
  std::vector<E> out;
  Napi::Value v = o.Get(key);
  if (v.IsTypedArray()) {
    A arr = v.As<A>();
    out.assign(arr.Data(), arr.Data() + arr.ElementLength());
  }
  return out;
}

// A call's descriptor as read on the JavaScript thread; the worker resolves ids to pointers.
struct CallDesc {
  fa::AttnParams p{};
  uint32_t q = 0, k = 0, v = 0, out = 0, lse = 0, bias = 0;
  uint32_t dout = 0, lse_in = 0, dq = 0, dk = 0, dv = 0;
  std::vector<int> cu_q, cu_k, seqlens_k, block_table;
  std::vector<float> alibi;
  size_t out_bytes = 0, lse_bytes = 0, kv_bytes = 0;
  bool pages_shared = false;
  fa::Options opt{};
};

CallDesc read_desc(const Napi::Object& o, bool backward) {
  CallDesc c;
  fa::AttnParams& p = c.p;
  p.dtype = (int)num_of(o, "dtype");
  p.batch = (int)num_of(o, "batch");
  p.seq_q = (int)num_of(o, "seqQ");
  p.seq_k = (int)num_of(o, "seqK");
  p.hq = (int)num_of(o, "headsQ");
  p.hk = (int)num_of(o, "headsK");
  p.d = (int)num_of(o, "headDim");
  p.group = p.hk > 0 ? p.hq / p.hk : 1;
  p.total_q = (int)num_of(o, "totalQ");
  p.total_k = (int)num_of(o, "totalK");
  p.q_sb = (long long)num_of(o, "qSb");
  p.q_ss = (long long)num_of(o, "qSs");
  p.q_sh = (long long)num_of(o, "qSh");
  p.kv_sb = (long long)num_of(o, "kvSb");
  p.kv_ss = (long long)num_of(o, "kvSs");
  p.kv_sh = (long long)num_of(o, "kvSh");
  p.page_size = (int)num_of(o, "pageSize");
  p.max_pages = (int)num_of(o, "maxPages");
  p.scale = (float)num_of(o, "scale");
  p.softcap = (float)num_of(o, "softcap");
  p.causal = num_of(o, "causal") != 0;
  p.wl = (int)num_of(o, "windowLeft", -1);
  p.wr = (int)num_of(o, "windowRight", -1);
  p.alibi_per_batch = num_of(o, "alibiPerBatch") != 0;
  p.bias_dtype = (int)num_of(o, "biasDtype");
  p.bias_s0 = (long long)num_of(o, "biasS0");
  p.bias_s1 = (long long)num_of(o, "biasS1");
  p.bias_s2 = (long long)num_of(o, "biasS2");
  p.bias_s3 = (long long)num_of(o, "biasS3");
  p.has_dropout = num_of(o, "dropout") != 0;
  p.drop_threshold = (unsigned long long)num_of(o, "dropThreshold");
  p.keep_scale = (float)num_of(o, "keepScale", 1);
  p.key0 = (unsigned)num_of(o, "key0");
  p.key1 = (unsigned)num_of(o, "key1");
  p.drop_offset = (unsigned)num_of(o, "dropOffset");
  p.num_splits = 1;
  p.only_batch = -1;
  p.only_kblock = -1;
  c.q = id_of(o, "q");
  c.k = id_of(o, "k");
  c.v = id_of(o, "v");
  c.out = id_of(o, "out");
  c.lse = id_of(o, "lse");
  c.bias = id_of(o, "bias");
  c.cu_q = vec_of<Napi::Int32Array, int>(o, "cuSeqlensQ");
  c.cu_k = vec_of<Napi::Int32Array, int>(o, "cuSeqlensK");
  c.seqlens_k = vec_of<Napi::Int32Array, int>(o, "seqlensK");
  c.block_table = vec_of<Napi::Int32Array, int>(o, "blockTable");
  c.alibi = vec_of<Napi::Float32Array, float>(o, "alibiSlopes");
  c.out_bytes = (size_t)num_of(o, "outBytes");
  c.lse_bytes = (size_t)num_of(o, "lseBytes");
  c.kv_bytes = (size_t)num_of(o, "kvBytes");
  c.opt.force_generic = num_of(o, "forceGeneric") != 0;
  c.opt.variant = (int)num_of(o, "variant");
  c.opt.nondeterministic = num_of(o, "nondeterministic") != 0;
  if (backward) {
    c.dout = id_of(o, "dout");
    c.lse_in = id_of(o, "lseIn");
    c.dq = id_of(o, "dq");
    c.dk = id_of(o, "dk");
    c.dv = id_of(o, "dv");
    c.pages_shared = num_of(o, "pagesShared") != 0;
  }
  return c;
}

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceMethod("init", &Context::JsInit),
                           InstanceMethod("newId", &Context::JsNewId),
                           InstanceMethod("upload", &Context::JsUpload),
                           InstanceMethod("download", &Context::JsDownload),
                           InstanceMethod("free", &Context::JsFree),
                           InstanceMethod("forward", &Context::JsForward),
                           InstanceMethod("backward", &Context::JsBackward),
                           InstanceMethod("time", &Context::JsTime),
                           InstanceMethod("copyBench", &Context::JsCopyBench),
                           InstanceMethod("stats", &Context::JsStats),
                           InstanceMethod("dispose", &Context::JsDispose),
                       });
  }

  explicit Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    Napi::Env env = info.Env();
    device_ = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
    // The finalizer runs when Node destroys the function: after the Release below, or at the
    // environment's teardown, before or after this object's own finalizer (then nothing is left to
    // release: releasing it again aborted a process that exited with two backends alive).
    auto gone = tsfn_gone_;
    tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                          "flashattn-cuda", 0, 1, [gone](Napi::Env) { *gone = true; });
    tsfn_.Unref(env);
    worker_ = std::thread([this] { Loop(); });
  }

  ~Context() override {
    Stop();
    if (!*tsfn_gone_) tsfn_.Release();
  }

  // Worker-side state, public for the task lambdas.
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool ready_ = false;
  bool lost_ = false;
  std::string lost_msg_;
  fa::DeviceProps props_{};
  std::unordered_map<uint32_t, Buf> bufs_;
  size_t live_bytes_ = 0;
  size_t peak_bytes_ = 0;

  void check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    cudaGetLastError();  // clear a non-sticky error
    if (e == cudaErrorMemoryAllocation) throw Fail{"OUT_OF_MEMORY", describe_cuda(e, what)};
    if (is_sticky(e)) {
      lost_ = true;
      lost_msg_ = describe_cuda(e, what);
      throw Fail{"DEVICE_LOST", lost_msg_ + "; the CUDA context is unusable: create a new backend"};
    }
    throw Fail{"DEVICE_LOST", describe_cuda(e, what)};
  }

  void* ptr(uint32_t id, const char* name) {
    if (id == 0) return nullptr;
    auto it = bufs_.find(id);
    if (it == bufs_.end()) throw Fail{"DISPOSED", std::string(name) + " refers to a device buffer that was freed or never made"};
    return it->second.ptr;
  }

  void alloc(uint32_t id, size_t bytes) {
    void* p = nullptr;
    check(cudaMallocAsync(&p, bytes == 0 ? 256 : bytes, stream_), "cudaMallocAsync");
    bufs_[id] = Buf{p, bytes};
    live_bytes_ += bytes;
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  }

  // The tensor-core decode's arrival counters (AttnParams::split_count): one per (batch, key head),
  // zeroed once when the array grows; every decode leaves them at zero again, and calls on this
  // stream run one after another, so no memset per call. Not in live_bytes_ (4 bytes per key head).
  unsigned int* split_count_ = nullptr;
  long long split_count_len_ = 0;

  void bind_decode_state(fa::AttnParams& p) {
    const long long need = (long long)p.batch * p.hk;
    if (need > split_count_len_) {
      const long long n = std::max<long long>(need, 256);
      if (split_count_) cudaFreeAsync(split_count_, stream_);
      split_count_ = nullptr;
      split_count_len_ = 0;
      void* ptr = nullptr;
      check(cudaMallocAsync(&ptr, (size_t)n * sizeof(unsigned int), stream_), "cudaMallocAsync");
      check(cudaMemsetAsync(ptr, 0, (size_t)n * sizeof(unsigned int), stream_), "cudaMemset");
      split_count_ = static_cast<unsigned int*>(ptr);
      split_count_len_ = n;
    }
    p.split_count = split_count_;
    p.split_count_len = split_count_len_;
    p.decode_part = &decode_part_;
  }

  void release_decode_state() {
    if (split_count_) cudaFreeAsync(split_count_, stream_);
    split_count_ = nullptr;
    split_count_len_ = 0;
    if (decode_part_.ptr) cudaFreeAsync(decode_part_.ptr, stream_);
    decode_part_ = fa::KeptBuffer{};
  }

  // The tensor-core decode's split partials (AttnParams::decode_part), kept across calls: a
  // stream-ordered allocation and free per call cost ~1 us of device time at 32k keys (PERF.md run
  // 15, variant 11). Grown by the launch code, at most 32 MB (larger needs allocate per call); not in
  // live_bytes_, like the counters.
  fa::KeptBuffer decode_part_;

  void release(uint32_t id) {
    auto it = bufs_.find(id);
    if (it == bufs_.end()) return;
    cudaFreeAsync(it->second.ptr, stream_);
    live_bytes_ -= it->second.bytes;
    bufs_.erase(it);
  }

 private:
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task*> queue_;
  bool stop_ = false;
  bool disposed_ = false;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<bool> tsfn_gone_ = std::make_shared<bool>(false);  // JavaScript thread only
  int pending_ = 0;  // JavaScript thread only
  std::atomic<uint32_t> next_id_{1};

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  void Loop() {
    for (;;) {
      Task* t;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) break;
        t = queue_.front();
        queue_.pop_front();
      }
      if (lost_ && !t->always) {
        t->ok = false;
        t->fail = Fail{"DEVICE_LOST", lost_msg_};
      } else {
        try {
          t->run(*this, *t);
        } catch (const Fail& f) {
          t->ok = false;
          t->fail = f;
        } catch (const std::exception& e) {
          t->ok = false;
          t->fail = Fail{"DEVICE_LOST", e.what()};
        }
      }
      napi_status s = tsfn_.NonBlockingCall(t, [](Napi::Env env, Napi::Function, Task* task) { Complete(env, task); });
      if (s != napi_ok) delete t;  // the environment is going away
    }
    // Leaving: give back what is still held.
    if (ready_) {
      cudaSetDevice(device_);
      for (auto& kv : bufs_) cudaFreeAsync(kv.second.ptr, stream_);
      bufs_.clear();
      release_decode_state();
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
      ready_ = false;
    }
  }

  static void Complete(Napi::Env env, Task* t) {
    Context* ctx = t->ctx;
    if (t->deferred) {
      if (t->ok) {
        Napi::Value v = t->result ? t->result(env, *t) : env.Undefined();
        napi_resolve_deferred(env, t->deferred, v);
      } else {
        Napi::Error e = Napi::Error::New(env, t->fail.message);
        e.Set("code", Napi::String::New(env, t->fail.code));
        napi_reject_deferred(env, t->deferred, e.Value());
      }
    }
    delete t;
    if (--ctx->pending_ == 0) ctx->tsfn_.Unref(env);
  }

  // Queues a task; returns its promise (or undefined when !with_promise).
  Napi::Value Enqueue(Napi::Env env, Task* t, bool with_promise) {
    t->ctx = this;
    t->keep.push_back(Napi::Persistent(Value()));
    Napi::Value promise = env.Undefined();
    if (with_promise) {
      napi_value pv;
      napi_create_promise(env, &t->deferred, &pv);
      promise = Napi::Value(env, pv);
    }
    if (pending_++ == 0) tsfn_.Ref(env);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(t);
    }
    cv_.notify_one();
    return promise;
  }

  Napi::Value Rejected(Napi::Env env, const char* code, const std::string& msg) {
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, code));
    d.Reject(e.Value());
    return d.Promise();
  }

  bool Closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_ || disposed_;
  }

  // init(): selects the device, makes the stream, reads the properties.
  Napi::Value JsInit(const Napi::CallbackInfo& info) {
    Task* t = new Task();
    t->run = [](Context& c, Task& task) {
      int drv = 0;
      cudaDriverGetVersion(&drv);
      if (drv == 0) throw Fail{"NO_DRIVER", "the CUDA driver library libcuda.so.1 was not found or could not be loaded"};
      int n = 0;
      cudaError_t e = cudaGetDeviceCount(&n);
      if (e == cudaErrorInsufficientDriver) {
        throw Fail{"NO_DRIVER", std::string("the CUDA driver (version ") + std::to_string(drv) +
                                    ") is older than this addon's runtime needs: " + cudaGetErrorString(e)};
      }
      if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0)) {
        throw Fail{"NO_GPU", std::string("the CUDA driver (version ") + std::to_string(drv) + ") sees no device"};
      }
      if (e != cudaSuccess) throw Fail{"NO_GPU", describe_cuda(e, "cudaGetDeviceCount")};
      if (c.device_ < 0 || c.device_ >= n) {
        throw Fail{"NO_GPU", "device " + std::to_string(c.device_) + " does not exist (" + std::to_string(n) + " found)"};
      }
      c.check(cudaSetDevice(c.device_), "cudaSetDevice");
      cudaDeviceProp prop;
      c.check(cudaGetDeviceProperties(&prop, c.device_), "cudaGetDeviceProperties");
      if (prop.major < 8) {
        throw Fail{"NO_GPU", std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                                 std::to_string(prop.minor) + "; the kernels need 8.0 or newer"};
      }
      c.check(cudaStreamCreateWithFlags(&c.stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      cudaMemPool_t pool;
      if (cudaDeviceGetDefaultMemPool(&pool, c.device_) == cudaSuccess) {
        uint64_t threshold = UINT64_MAX;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
      }
      c.props_.sm_count = prop.multiProcessorCount;
      c.props_.smem_optin = (int)prop.sharedMemPerBlockOptin;
      c.props_.major = prop.major;
      c.props_.minor = prop.minor;
      c.ready_ = true;
      int rt = 0;
      cudaRuntimeGetVersion(&rt);
      task.text = prop.name;
      task.num[0] = prop.multiProcessorCount;
      task.num[1] = (double)prop.totalGlobalMem;
      task.num[2] = prop.major * 10 + prop.minor;
      task.num[3] = (double)prop.l2CacheSize;
      task.times = {(double)drv, (double)rt, (double)prop.sharedMemPerBlockOptin};
    };
    t->result = [](Napi::Env env, Task& task) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", task.text);
      o.Set("smCount", task.num[0]);
      o.Set("totalMemory", task.num[1]);
      o.Set("computeCapability", task.num[2] / 10);
      o.Set("l2Bytes", task.num[3]);
      o.Set("driverVersion", task.times[0]);
      o.Set("runtimeVersion", task.times[1]);
      o.Set("sharedMemPerBlockOptin", task.times[2]);
      return o;
    };
    return Enqueue(info.Env(), t, true);
  }

  Napi::Value JsNewId(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), next_id_.fetch_add(1));
  }

  // upload(id, typedArray): allocates the buffer and copies the bytes.
  Napi::Value JsUpload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Napi::TypedArray arr = info[1].As<Napi::TypedArray>();
    const uint8_t* src = static_cast<const uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    const size_t bytes = arr.ByteLength();
    Task* t = new Task();
    t->keep.push_back(Napi::Persistent(arr.As<Napi::Object>()));
    t->run = [id, src, bytes](Context& c, Task&) {
      c.alloc(id, bytes);
      if (bytes) c.check(cudaMemcpyAsync(c.bufs_[id].ptr, src, bytes, cudaMemcpyHostToDevice, c.stream_), "upload");
      cudaError_t e = cudaStreamSynchronize(c.stream_);
      if (e != cudaSuccess) {
        c.release(id);
        c.check(e, "upload");
      }
    };
    return Enqueue(env, t, true);
  }

  // download(id, typedArray): copies the buffer's first byteLength bytes into the array.
  Napi::Value JsDownload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Napi::TypedArray arr = info[1].As<Napi::TypedArray>();
    uint8_t* dst = static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    const size_t bytes = arr.ByteLength();
    Task* t = new Task();
    t->keep.push_back(Napi::Persistent(arr.As<Napi::Object>()));
    t->run = [id, dst, bytes](Context& c, Task&) {
      void* src = c.ptr(id, "download");
      auto it = c.bufs_.find(id);
      if (it->second.bytes < bytes) throw Fail{"SHAPE_MISMATCH", "download: the buffer is smaller than the array"};
      if (bytes) c.check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c.stream_), "download");
      c.check(cudaStreamSynchronize(c.stream_), "download");
    };
    return Enqueue(env, t, true);
  }

  // free(id): queued after everything before it; no promise.
  Napi::Value JsFree(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return env.Undefined();
    const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Task* t = new Task();
    t->always = true;
    t->run = [id](Context& c, Task&) {
      if (!c.lost_) c.release(id);
    };
    return Enqueue(env, t, false);
  }

  // Resolves a descriptor's ids, uploads its small host arrays into scratch; returns the scratch ids.
  static void Bind(Context& c, CallDesc& d, std::vector<uint32_t>& scratch_ids, uint32_t& next_scratch) {
    fa::AttnParams& p = d.p;
    p.q = c.ptr(d.q, "q");
    p.k = c.ptr(d.k, "k");
    p.v = c.ptr(d.v, "v");
    p.bias = d.bias ? c.ptr(d.bias, "bias") : nullptr;
    auto up = [&](const void* src, size_t bytes) -> void* {
      if (bytes == 0) return nullptr;
      const uint32_t id = next_scratch--;
      c.alloc(id, bytes);
      scratch_ids.push_back(id);
      c.check(cudaMemcpyAsync(c.bufs_[id].ptr, src, bytes, cudaMemcpyHostToDevice, c.stream_), "upload");
      return c.bufs_[id].ptr;
    };
    p.cu_q = static_cast<const int*>(up(d.cu_q.data(), d.cu_q.size() * 4));
    p.cu_k = static_cast<const int*>(up(d.cu_k.data(), d.cu_k.size() * 4));
    p.seqlens_k = static_cast<const int*>(up(d.seqlens_k.data(), d.seqlens_k.size() * 4));
    p.block_table = static_cast<const int*>(up(d.block_table.data(), d.block_table.size() * 4));
    p.alibi = static_cast<const float*>(up(d.alibi.data(), d.alibi.size() * 4));
  }

  static Napi::Value PlanResult(Napi::Env env, Task& task) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("kernel", task.kernel);
    o.Set("splits", task.splits);
    o.Set("scratchBytes", task.scratch_bytes);
    return o;
  }

  // forward(desc): allocates out (and lse) under the descriptor's ids and runs the kernels.
  Napi::Value JsForward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    auto d = std::make_shared<CallDesc>(read_desc(info[0].As<Napi::Object>(), false));
    Task* t = new Task();
    t->run = [d](Context& c, Task& task) {
      std::vector<uint32_t> scratch;
      uint32_t next_scratch = 0xffffffffu;
      bool made_out = false, made_lse = false;
      try {
        Bind(c, *d, scratch, next_scratch);
        c.alloc(d->out, d->out_bytes);
        made_out = true;
        d->p.out = c.bufs_[d->out].ptr;
        d->p.lse = nullptr;
        if (d->lse) {
          c.alloc(d->lse, d->lse_bytes);
          made_lse = true;
          d->p.lse = static_cast<float*>(c.bufs_[d->lse].ptr);
        }
        c.bind_decode_state(d->p);
        fa::Plan plan{};
        c.check(fa::run_forward(d->p, c.props_, d->opt, c.stream_, &plan), "forward");
        c.check(cudaStreamSynchronize(c.stream_), "forward");
        task.kernel = plan.kernel;
        task.splits = plan.splits;
        task.scratch_bytes = (double)plan.scratch_bytes;
      } catch (...) {
        if (!c.lost_) {
          if (made_out) c.release(d->out);
          if (made_lse) c.release(d->lse);
        }
        for (uint32_t id : scratch) c.release(id);
        throw;
      }
      for (uint32_t id : scratch) c.release(id);
    };
    t->result = PlanResult;
    return Enqueue(env, t, true);
  }

  Napi::Value JsBackward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    auto d = std::make_shared<CallDesc>(read_desc(info[0].As<Napi::Object>(), true));
    Task* t = new Task();
    t->run = [d](Context& c, Task& task) {
      std::vector<uint32_t> scratch;
      uint32_t next_scratch = 0xffffffffu;
      std::vector<uint32_t> made;
      try {
        Bind(c, *d, scratch, next_scratch);
        d->p.dout = c.ptr(d->dout, "dout");
        d->p.out = c.ptr(d->out, "out");
        d->p.lse_in = static_cast<const float*>(c.ptr(d->lse_in, "lse"));
        c.alloc(d->dq, d->out_bytes);
        made.push_back(d->dq);
        c.alloc(d->dk, d->kv_bytes);
        made.push_back(d->dk);
        c.alloc(d->dv, d->kv_bytes);
        made.push_back(d->dv);
        d->p.dq = c.bufs_[d->dq].ptr;
        d->p.dk = c.bufs_[d->dk].ptr;
        d->p.dv = c.bufs_[d->dv].ptr;
        fa::Plan plan{};
        c.check(fa::run_backward(d->p, c.props_, d->opt, d->pages_shared, c.stream_, &plan), "backward");
        c.check(cudaStreamSynchronize(c.stream_), "backward");
        task.kernel = plan.kernel;
        task.scratch_bytes = (double)plan.scratch_bytes;
      } catch (...) {
        if (!c.lost_)
          for (uint32_t id : made) c.release(id);
        for (uint32_t id : scratch) c.release(id);
        throw;
      }
      for (uint32_t id : scratch) c.release(id);
    };
    t->result = PlanResult;
    return Enqueue(env, t, true);
  }

  // time(desc, backward, warmup, iters): device time of each of `iters` calls (ms), CUDA events.
  // The descriptor names the inputs; outputs are made once and freed at the end.
  Napi::Value JsTime(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    const bool backward = info[1].ToBoolean();
    auto d = std::make_shared<CallDesc>(read_desc(info[0].As<Napi::Object>(), backward));
    const int warmup = info[2].As<Napi::Number>().Int32Value();
    const int iters = info[3].As<Napi::Number>().Int32Value();
    Task* t = new Task();
    t->run = [d, backward, warmup, iters](Context& c, Task& task) {
      std::vector<uint32_t> scratch;
      uint32_t next_scratch = 0xffffffffu;
      std::vector<uint32_t> made;
      std::vector<cudaEvent_t> evs;
      auto cleanup = [&] {
        for (uint32_t id : made) c.release(id);
        for (uint32_t id : scratch) c.release(id);
        for (cudaEvent_t e : evs)
          if (e) cudaEventDestroy(e);
      };
      try {
        Bind(c, *d, scratch, next_scratch);
        auto mk = [&](size_t bytes) {
          const uint32_t id = next_scratch--;
          c.alloc(id, bytes);
          made.push_back(id);
          return c.bufs_[id].ptr;
        };
        fa::Plan plan{};
        if (!backward) {
          c.bind_decode_state(d->p);
          d->p.out = mk(d->out_bytes);
          d->p.lse = d->lse ? static_cast<float*>(mk(d->lse_bytes)) : nullptr;
        } else {
          d->p.dout = c.ptr(d->dout, "dout");
          d->p.out = c.ptr(d->out, "out");
          d->p.lse_in = static_cast<const float*>(c.ptr(d->lse_in, "lse"));
          d->p.dq = mk(d->out_bytes);
          d->p.dk = mk(d->kv_bytes);
          d->p.dv = mk(d->kv_bytes);
        }
        // Every call is queued before the first is waited for, so that the host's launch work for
        // call n + 1 overlaps call n: a wait after each call would put the host's launch latency
        // (~10-20 us) inside the next pair of events, a quarter of a 32k-key decode (PERF.md run 5).
        const int n = warmup + iters;
        evs.assign(2 * (size_t)n, nullptr);
        for (auto& e : evs) c.check(cudaEventCreate(&e), "cudaEventCreate");
        for (int it = 0; it < n; it++) {
          c.check(cudaEventRecord(evs[2 * it], c.stream_), "cudaEventRecord");
          if (!backward)
            c.check(fa::run_forward(d->p, c.props_, d->opt, c.stream_, &plan), "forward");
          else
            c.check(fa::run_backward(d->p, c.props_, d->opt, d->pages_shared, c.stream_, &plan), "backward");
          c.check(cudaEventRecord(evs[2 * it + 1], c.stream_), "cudaEventRecord");
        }
        if (n > 0) c.check(cudaEventSynchronize(evs[2 * n - 1]), "timing");
        for (int it = warmup; it < n; it++) {
          float ms = 0;
          c.check(cudaEventElapsedTime(&ms, evs[2 * it], evs[2 * it + 1]), "cudaEventElapsedTime");
          task.times.push_back(ms);
        }
        task.kernel = plan.kernel;
        task.splits = plan.splits;
        task.scratch_bytes = (double)plan.scratch_bytes;
      } catch (...) {
        cleanup();
        throw;
      }
      cleanup();
    };
    t->result = [](Napi::Env env, Task& task) -> Napi::Value {
      Napi::Object o = PlanResult(env, task).As<Napi::Object>();
      Napi::Float64Array a = Napi::Float64Array::New(env, task.times.size());
      for (size_t i = 0; i < task.times.size(); i++) a[i] = task.times[i];
      o.Set("ms", a);
      return o;
    };
    return Enqueue(env, t, true);
  }

  // copyBench(bytes, iters): device-to-device copy times (ms) of one buffer into another.
  Napi::Value JsCopyBench(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    const size_t bytes = (size_t)info[0].As<Napi::Number>().DoubleValue();
    const int iters = info[1].As<Napi::Number>().Int32Value();
    Task* t = new Task();
    t->run = [bytes, iters](Context& c, Task& task) {
      void* a = nullptr;
      void* b = nullptr;
      cudaEvent_t e0 = nullptr, e1 = nullptr;
      auto cleanup = [&] {
        if (a) cudaFreeAsync(a, c.stream_);
        if (b) cudaFreeAsync(b, c.stream_);
        if (e0) cudaEventDestroy(e0);
        if (e1) cudaEventDestroy(e1);
      };
      try {
        c.check(cudaMallocAsync(&a, bytes, c.stream_), "cudaMallocAsync");
        c.check(cudaMallocAsync(&b, bytes, c.stream_), "cudaMallocAsync");
        c.check(cudaMemsetAsync(a, 1, bytes, c.stream_), "cudaMemset");
        c.check(cudaEventCreate(&e0), "cudaEventCreate");
        c.check(cudaEventCreate(&e1), "cudaEventCreate");
        for (int it = 0; it < iters + 3; it++) {
          c.check(cudaEventRecord(e0, c.stream_), "cudaEventRecord");
          c.check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, c.stream_), "copy");
          c.check(cudaEventRecord(e1, c.stream_), "cudaEventRecord");
          c.check(cudaEventSynchronize(e1), "copy");
          float ms = 0;
          cudaEventElapsedTime(&ms, e0, e1);
          if (it >= 3) task.times.push_back(ms);
        }
      } catch (...) {
        cleanup();
        throw;
      }
      cleanup();
    };
    t->result = [](Napi::Env env, Task& task) -> Napi::Value {
      Napi::Float64Array a = Napi::Float64Array::New(env, task.times.size());
      for (size_t i = 0; i < task.times.size(); i++) a[i] = task.times[i];
      return a;
    };
    return Enqueue(env, t, true);
  }

  // stats(): live buffers and bytes, peak bytes, the device's free and total memory.
  Napi::Value JsStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (Closed()) return Rejected(env, "DISPOSED", "the cuda backend was disposed");
    Task* t = new Task();
    t->run = [](Context& c, Task& task) {
      size_t fr = 0, tot = 0;
      c.check(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
      task.num[0] = (double)c.bufs_.size();
      task.num[1] = (double)c.live_bytes_;
      task.num[2] = (double)c.peak_bytes_;
      task.num[3] = (double)fr;
      task.scratch_bytes = (double)tot;
    };
    t->result = [](Napi::Env env, Task& task) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("liveBuffers", task.num[0]);
      o.Set("liveBytes", task.num[1]);
      o.Set("peakBytes", task.num[2]);
      o.Set("freeMemory", task.num[3]);
      o.Set("totalMemory", task.scratch_bytes);
      return o;
    };
    return Enqueue(env, t, true);
  }

  // dispose(): frees every buffer, destroys the stream and ends the worker.
  Napi::Value JsDispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (disposed_) {
        auto d = Napi::Promise::Deferred::New(env);
        d.Resolve(env.Undefined());
        return d.Promise();
      }
      disposed_ = true;
    }
    Task* t = new Task();
    t->always = true;
    t->run = [](Context& c, Task&) {
      if (c.ready_) {
        for (auto& kv : c.bufs_) cudaFreeAsync(kv.second.ptr, c.stream_);
        c.bufs_.clear();
        c.release_decode_state();
        c.live_bytes_ = 0;
        cudaStreamSynchronize(c.stream_);
        cudaStreamDestroy(c.stream_);
        c.ready_ = false;
      }
      std::lock_guard<std::mutex> lock(c.mu_);
      c.stop_ = true;  // the worker ends once this task is reported
    };
    return Enqueue(env, t, true);
  }
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  exports.Set("Context", Context::Init(env));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  exports.Set("runtimeVersion", Napi::Number::New(env, rt));
  return exports;
}

}  // namespace

NODE_API_MODULE(flashattn_cuda, InitAll)
