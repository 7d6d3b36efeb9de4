// SPDX-License-Identifier: Apache-2.0
// The bridge from the library's callback operations to Asio completion tokens, so that every
// `async_` function accepts a callback, `boost::asio::use_awaitable` (co_await), or any
// other token, like Asio's own operations.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

namespace quartzflow::detail {

/**
 * Starts `initiate(callback)` and completes the token with what the callback receives.
 * The completion runs on the handler's associated executor (`executor` when it has none),
 * which is kept busy until then, as Asio's composed operations do. The callback is
 * copyable (the library's operations store it in a std::function); the handler may be
 * move-only (a coroutine's continuation).
 */
template <typename Signature, typename Token, typename Initiate>
auto async_from_callback(boost::asio::any_io_executor executor, Token&& token, Initiate initiate) {
  return boost::asio::async_initiate<Token, Signature>(
      [executor = std::move(executor), initiate = std::move(initiate)](auto handler) mutable {
        using Handler = std::decay_t<decltype(handler)>;
        auto target = boost::asio::prefer(boost::asio::get_associated_executor(handler, executor),
                                          boost::asio::execution::outstanding_work.tracked);
        auto shared = std::make_shared<Handler>(std::move(handler));
        initiate([shared, target](auto... results) {
          boost::asio::dispatch(target, [shared, ... results = std::move(results)]() mutable {
            std::move (*shared)(std::move(results)...);
          });
        });
      },
      token);
}

/**
 * async_from_callback over a callback operation called as `operation(args..., callback)`
 * (a member function pointer takes the object as its first argument): the arguments are
 * kept by value until the operation starts, then moved into it. The `async_` forms of the
 * library's classes are this one line each:
 * @code
 * return detail::async_invoke<void(Result<v1::Task>)>(get_executor(), std::forward<Token>(token),
 *     &Coordinator::create_task, this, std::move(task), std::move(actor));
 * @endcode
 */
template <typename Signature, typename Token, typename Operation, typename... Args>
auto async_invoke(boost::asio::any_io_executor executor, Token&& token, Operation operation, Args&&... args) {
  return async_from_callback<Signature>(std::move(executor), std::forward<Token>(token),
                                        [operation, ... args = std::forward<Args>(args)](auto callback) mutable {
                                          std::invoke(operation, std::move(args)..., std::move(callback));
                                        });
}

}  // namespace quartzflow::detail
