/// Every live connection, in an array so the sweep walks contiguous memory and
/// allocates nothing; removal swaps with the last element.
struct ConnectionTable {
    private(set) var all: [Connection] = []

    var count: Int { all.count }

    mutating func add(_ connection: Connection) {
        precondition(connection.tableIndex == -1, "connection \(connection.id) added twice")
        connection.tableIndex = all.count
        all.append(connection)
    }

    mutating func remove(_ connection: Connection) {
        let index = connection.tableIndex
        precondition(index >= 0 && index < all.count && all[index] === connection, "connection not in table")
        let last = all.removeLast()
        if last !== connection {
            all[index] = last
            last.tableIndex = index
        }
        connection.tableIndex = -1
    }

    func find(id: UInt64) -> Connection? { all.first { $0.id == id } }
}
